"""A clone with nothing beside it is the whole project: no test, module, script or make
target may read a path above the repository root (a folder beside the clone once made
`make test` pass only where CI happened to have that folder)."""

from __future__ import annotations

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
