"""The layering that `lint-imports` enforces (pyproject.toml, [tool.importlinter]) covers
every module: the shell is the root package's own modules, so each one must be listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pomocore

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "classifiers", "sinks", "consumers")
NOT_IMPORTED = {"__init__", "__main__"}


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def shell_modules() -> set[str]:
    package = Path(pomocore.__file__).parent
    return {f"pomocore.{p.stem}" for p in package.glob("*.py") if p.stem not in NOT_IMPORTED}


def test_every_shell_module_is_forbidden_to_the_layers_below() -> None:
    (forbidden,) = [c for c in contracts() if c["type"] == "forbidden"]
    assert forbidden["source_modules"] == [f"pomocore.{layer}" for layer in LAYERS]
    assert set(forbidden["forbidden_modules"]) == shell_modules()  # type: ignore[arg-type]


def test_layers_contract_orders_the_subpackages() -> None:
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    assert layers["layers"] == [
        "pomocore.consumers",
        "pomocore.classifiers | pomocore.sinks",
        "pomocore.core",
    ]


def test_each_layer_folder_is_one_subpackage() -> None:
    for layer in LAYERS:
        assert (ROOT / layer / "__init__.py").is_file()
        module = __import__(f"pomocore.{layer}", fromlist=["_"])
        assert Path(module.__file__).resolve().parent == (ROOT / layer).resolve()
