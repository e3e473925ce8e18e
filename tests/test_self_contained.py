"""A clone with nothing beside it is the whole project: no test, module, script or make
target may read a path above the repository root (a folder beside the clone once made
`make test` pass only where CI happened to have that folder), and no code changes where
Python imports from (`sys.path`): the package imports as installed, the benchmarks and the
tests as the folders of the checkout they are run from (`python -m`, pytest's rootdir)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `Path(__file__).resolve().parents[N]` and `.parent.parent…` chains, resolved per file.
PARENTS_INDEX = re.compile(r"__file__\)\.resolve\(\)\.parents\[(\d+)\]")
PARENT_CHAIN = re.compile(r"__file__\)\.resolve\(\)((?:\.parent)+)")
# Relative escapes in code and shell: "../x", '..' path parts, os.pardir.
RELATIVE_ESCAPE = re.compile(r"""(?:^|[\s"'=(:])\.\./|os\.pardir|["']\.\.["']""")
SCANNED_SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ".yml", ".yaml", ""}
# kustomize resolves a kustomization's `resources` against the file's own folder: there
# `- ../k8s` is a folder of this repository when it resolves inside it.
KUSTOMIZATION = "kustomization.yaml"
KUSTOMIZE_RESOURCE = re.compile(r"^\s*-\s*((?:\.\./)+[\w./-]*)\s*$", re.MULTILINE)


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name]


def scanned_files() -> list[Path]:
    names = {"Makefile", "Dockerfile", "run"}
    return [
        p
        for p in tracked_files()
        if p.is_file()
        and (p.suffix in SCANNED_SUFFIXES and (p.suffix or p.name in names))
        and p != Path(__file__).resolve()
    ]


def escapes(path: Path, text: str) -> list[str]:
    found = []
    for match in PARENTS_INDEX.finditer(text):
        target = path.resolve().parents[int(match.group(1))]
        if not target.is_relative_to(ROOT):
            found.append(match.group(0))
    for match in PARENT_CHAIN.finditer(text):
        target = path.resolve()
        for _ in range(match.group(1).count(".parent")):
            target = target.parent
        if not target.is_relative_to(ROOT):
            found.append(match.group(0))
    if path.name == KUSTOMIZATION:
        for match in KUSTOMIZE_RESOURCE.finditer(text):
            if not (path.parent / match.group(1)).resolve().is_relative_to(ROOT):
                found.append(match.group(0).strip())
        text = KUSTOMIZE_RESOURCE.sub("", text)
    found.extend(m.group(0) for m in RELATIVE_ESCAPE.finditer(text))
    return found


def test_nothing_reads_above_the_repository_root() -> None:
    offenders = {
        str(p.relative_to(ROOT)): hits
        for p in scanned_files()
        if (hits := escapes(p, p.read_text(encoding="utf-8", errors="replace")))
    }
    assert offenders == {}


@pytest.mark.parametrize(
    ("relative", "text", "escaping"),
    [
        ("tests/x/test_a.py", 'Path(__file__).resolve().parents[3] / "beside"', True),
        ("tests/x/test_a.py", 'Path(__file__).resolve().parents[1] / "data"', False),
        ("tests/test_a.py", "Path(__file__).resolve().parent.parent.parent", True),
        ("tests/test_a.py", "Path(__file__).resolve().parent.parent", False),
        ("Makefile", "cp ../beside/data/x.jsonl tests/", True),
        ("Makefile", "cp tests/data/x.jsonl .data/", False),
        ("a.py", "open(os.path.join(os.pardir, 'x'))", True),
        ("deploy/k8s-shards/kustomization.yaml", "resources:\n  - ../k8s\n", False),
        ("deploy/k8s-shards/kustomization.yaml", "resources:\n  - ../../../beside\n", True),
        ("deploy/k8s-shards/other.yaml", "resources:\n  - ../k8s\n", True),
    ],
)
def test_escape_detector(relative: str, text: str, escaping: bool) -> None:
    assert bool(escapes(ROOT / relative, text)) is escaping


# --- sys.path ---

# Folders of Python code: a sys.path edit in any of them would let an import work here
# that does not work from a fresh clone (or from the installed package).
PYTHON_FOLDERS = ("benchmarks", "tests", "shell", "core", "classifiers", "consumers", "sinks")
LIST_MUTATORS = frozenset({"append", "insert", "extend", "remove", "pop", "clear"})


class PathMutations(ast.NodeVisitor):
    """Finds the statements that change sys.path: a list method that mutates it, an
    assignment to it or to a slice of it, `del` of a slice, `site.addsitedir`. Follows
    the names `import sys as s`, `from sys import path as p` and `from site import
    addsitedir` bind."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self.sys_names = {"sys"}
        self.site_names = {"site"}
        self.path_names: set[str] = set()
        self.addsitedir_names: set[str] = set()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name
            {"sys": self.sys_names, "site": self.site_names}.get(alias.name, set()).add(bound)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = {"sys": ("path", self.path_names), "site": ("addsitedir", self.addsitedir_names)}
        if node.module in names:
            wanted, into = names[node.module]
            into.update(a.asname or a.name for a in node.names if a.name == wanted)

    def is_sys_path(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Subscript):
            return self.is_sys_path(node.value)
        if isinstance(node, ast.Name):
            return node.id in self.path_names
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id in self.sys_names
        )

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        mutates = isinstance(func, ast.Attribute) and (
            (func.attr in LIST_MUTATORS and self.is_sys_path(func.value))
            or (
                func.attr == "addsitedir"
                and isinstance(func.value, ast.Name)
                and func.value.id in self.site_names
            )
        )
        if mutates or (isinstance(func, ast.Name) and func.id in self.addsitedir_names):
            self.found.append((node.lineno, ast.unparse(node)))
        self.generic_visit(node)

    def _targets(self, node: ast.stmt, targets: list[ast.expr]) -> None:
        if any(self.is_sys_path(t) for t in targets):
            self.found.append((node.lineno, ast.unparse(node)))
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._targets(node, node.targets)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._targets(node, [node.target])

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._targets(node, [node.target])

    def visit_Delete(self, node: ast.Delete) -> None:
        self._targets(node, node.targets)


def path_mutations(source: str) -> list[tuple[int, str]]:
    """(line, statement) of every sys.path change in `source`."""
    finder = PathMutations()
    finder.visit(ast.parse(source))
    return finder.found


def python_files() -> list[Path]:
    return sorted(p for folder in PYTHON_FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_no_code_changes_sys_path() -> None:
    found = [
        f"{p.relative_to(ROOT)}:{line}: {statement}"
        for p in python_files()
        for line, statement in path_mutations(p.read_text(encoding="utf-8"))
    ]
    assert found == [], "sys.path changed (import from the checkout instead):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "changes"),
    [
        ("import sys\nsys.path.append('x')", True),
        ("import sys\nsys.path.insert(0, str(ROOT))", True),
        ("import sys\nsys.path.extend(['a', 'b'])", True),
        ("import sys\nsys.path = ['x', *sys.path]", True),
        ("import sys\nsys.path += ['x']", True),
        ("import sys\nsys.path[:0] = ['x']", True),
        ("import sys\ndel sys.path[0]", True),
        ("import sys as s\ndef f():\n    s.path.insert(0, 'x')", True),
        ("from sys import path\npath.append('x')", True),
        ("from sys import path as p\np[0:0] = ['x']", True),
        ("import site\nsite.addsitedir('x')", True),
        ("from site import addsitedir\naddsitedir('x')", True),
        ("import sys\nprint(sys.path)", False),
        ("import sys\nfirst = sys.path[0]", False),
        ("import os\nos.path.join('a', 'b')", False),
        ("paths = []\npaths.append('x')", False),
        ("'sys.path.append(x)'", False),
    ],
)
def test_sys_path_detector(source: str, changes: bool) -> None:
    assert bool(path_mutations(source)) is changes
