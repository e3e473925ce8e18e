"""The declared dependencies are the true ones, and the pinned versions cannot drift.

- Every third-party import is declared (the layers: as a runtime dependency), and every
  runtime dependency is imported by the package.
- constraints/floor.txt pins every direct dependency to the lower bound pyproject.toml
  allows (`make test-floor` runs the suite on it); constraints/tested.txt (`make lock`)
  pins it to a version the specifier allows. The image and `make install` use the latter.
- The Dockerfile installs with constraints/tested.txt and copies every package folder.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
PACKAGE_DIRS = sorted(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
LAYERS = ("core", "classifiers", "sinks", "consumers")  # only runtime dependencies here
SCANNED = (*PACKAGE_DIRS, "tests", "benchmarks")
OURS = {"pomocore", "tests", "benchmarks"}
CONSTRAINTS = ("constraints/floor.txt", "constraints/tested.txt")


def requirements(entries: list[str]) -> dict[str, Requirement]:
    reqs = (Requirement(e) for e in entries)
    return {canonicalize_name(r.name): r for r in reqs if r.name != PROJECT["name"]}


RUNTIME = requirements(PROJECT["dependencies"])
EXTRAS = {name: requirements(entries) for name, entries in PROJECT["optional-dependencies"].items()}
DIRECT = RUNTIME | {n: r for extra in EXTRAS.values() for n, r in extra.items()}


def constraints(path: str) -> dict[str, Requirement]:
    lines = (line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines())
    return requirements([line for line in lines if line])


def pinned(req: Requirement) -> Version:
    (spec,) = req.specifier  # a constraints file pins: exactly one `==`
    assert spec.operator == "==", req
    return Version(spec.version)


@pytest.mark.parametrize("path", CONSTRAINTS)
def test_constraints_pin_every_direct_dependency_within_its_specifier(path: str) -> None:
    pins = constraints(path)
    missing = sorted(set(DIRECT) - set(pins))
    assert not missing, f"{path} does not pin {missing}"
    outside = {n: str(pins[n]) for n, r in DIRECT.items() if pinned(pins[n]) not in r.specifier}
    assert not outside, f"{path} pins outside pyproject.toml's specifiers: {outside}"


def test_floor_pins_are_the_lower_bounds() -> None:
    pins = constraints("constraints/floor.txt")
    for name, req in DIRECT.items():
        (bound,) = [s.version for s in req.specifier if s.operator == ">="]
        assert pinned(pins[name]) == Version(bound), f"{name}: floor.txt {pins[name]}, {req}"


def test_tested_constraints_pin_everything_but_the_package() -> None:
    pins = constraints("constraints/tested.txt")
    assert PROJECT["name"] not in pins and "-e" not in (ROOT / CONSTRAINTS[1]).read_text()
    assert all(pinned(r) for r in pins.values())


def python_files(folder: str) -> Iterator[Path]:
    yield from sorted((ROOT / folder).rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    """Top-level names of absolute imports, function-level ones included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party(path: Path) -> set[str]:
    """Imports that are neither ours, nor the standard library, nor a sibling script."""
    return {
        name
        for name in imported_names(path)
        if name not in OURS
        and name not in sys.stdlib_module_names
        and not (path.parent / f"{name}.py").exists()
        and not (path.parent / name).is_dir()
    }


@cache
def distributions_of(name: str) -> frozenset[str]:
    return frozenset(canonicalize_name(d) for d in packages_distributions().get(name, []))


def test_every_third_party_import_is_declared() -> None:
    undeclared = {}
    for folder in SCANNED:
        allowed = RUNTIME if folder in LAYERS else DIRECT
        for path in python_files(folder):
            bad = {n for n in third_party(path) if not distributions_of(n) & set(allowed)}
            if bad:
                undeclared[str(path.relative_to(ROOT))] = sorted(bad)
    assert not undeclared, f"imports of undeclared packages: {undeclared}"


def applies(req: Requirement) -> bool:
    """False for a dependency of another platform (uvloop on Windows)."""
    return req.marker is None or req.marker.evaluate()


def test_every_runtime_dependency_is_imported() -> None:
    imported: set[str] = set()
    for folder in PACKAGE_DIRS:
        for path in python_files(folder):
            for name in third_party(path):
                imported |= distributions_of(name)
    unused = sorted(n for n, r in RUNTIME.items() if applies(r) and n not in imported)
    assert not unused, f"declared but imported by no module of the package: {unused}"


def test_dockerfile_installs_the_tested_versions_of_every_package_folder() -> None:
    text = (ROOT / "Dockerfile").read_text()
    copied = {w for line in re.findall(r"^COPY (?!--from)(.*)$", text, re.M) for w in line.split()}
    assert {"constraints", *PACKAGE_DIRS} <= {c.strip("./") for c in copied}, copied
    installs = re.findall(r"pip install [^\n]*", text)
    assert any("-c constraints/tested.txt" in i and i.rstrip().endswith(" .") for i in installs)
