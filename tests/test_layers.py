"""The import-linter contract "only the shell imports the shell" lists the shell's modules
one by one (the shell is the root package, so it cannot be named as a whole): a module
added to `shell/` and not to that list would be importable from every layer unnoticed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE_DIRS: dict[str, str] = CONFIG["tool"]["setuptools"]["package-dir"]
(SHELL_CONTRACT,) = [
    c
    for c in CONFIG["tool"]["importlinter"]["contracts"]
    if c["name"] == "only the shell imports the shell"
]


def test_every_shell_module_is_forbidden_to_the_layers_below() -> None:
    shell = ROOT / PACKAGE_DIRS["pomocore"]
    modules = {f"pomocore.{p.stem}" for p in shell.glob("*.py") if p.stem != "__init__"}
    assert set(SHELL_CONTRACT["forbidden_modules"]) == modules


def test_the_layers_below_are_all_the_other_packages() -> None:
    assert set(SHELL_CONTRACT["source_modules"]) == set(PACKAGE_DIRS) - {"pomocore"}
