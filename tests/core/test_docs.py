"""The README's configuration table is generated from Settings; keep them in sync."""

from __future__ import annotations

import re
from pathlib import Path

from pomocore.core.events import REASONS
from pomocore.core.settings import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- settings-table:start -->") + len("<!-- settings-table:start -->")
    end = readme.index("<!-- settings-table:end -->")
    assert readme[start:end].strip() == markdown_table(), (
        "README settings table is stale: regenerate it with "
        "`python -c 'from pomocore.core.settings import markdown_table; print(markdown_table())'`"
    )


def test_every_reason_is_in_the_contract_table() -> None:
    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    table = contract[contract.index("### Validation and reason codes") :]
    table = table[: table.index("\n\n", table.index("| field |"))]
    assert [r for r in REASONS if f"`{r}`" not in table] == []


def test_readme_leads_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = readme[: readme.index("## ")]
    assert "make run" in head and "make test" in head


# A repository path in prose: a top-level folder of ours, then a file or folder below it.
# `pipeline/` is the folder the code left; every mention of it is stale.
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:shell|core|classifiers|consumers|sinks|tests|docs|deploy|benchmarks"
    r"|constraints|pipeline)/[\w./-]*\w)"
)
PRODUCT_FOLDERS = ("shell", "core", "classifiers", "consumers", "sinks")
# A record of earlier measurements: its paths name files of the commits it cites.
NOT_SCANNED = {"docs/benchmark-history.md"}


def documents() -> list[Path]:
    """User docs, the benchmarks' README, the container build, the constraints files' notes
    and the product's modules (docstrings and comments)."""
    found = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "Dockerfile"]
    found += sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "constraints").glob("*.txt"))
    for folder in PRODUCT_FOLDERS:
        found += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".lua"))
    return [p for p in found if str(p.relative_to(ROOT)) not in NOT_SCANNED]


# Git-ignored folders that runs write (a fresh clone has none): what the docs name in them
# is output, not a file of the repository.
GENERATED = ("benchmarks/runs",)


def names_something(path: str) -> bool:
    """The path exists, names a file without its ending (`benchmarks/README`), or lies in a
    folder that runs write."""
    target = ROOT / path
    generated = any(path == g or path.startswith(g + "/") for g in GENERATED)
    return generated or target.exists() or any(target.parent.glob(target.name + ".*"))


def test_paths_in_docs_and_docstrings_exist() -> None:
    stale = [
        f"{doc.relative_to(ROOT)}:{number}: {match.group(1)}"
        for doc in documents()
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        for match in REPO_PATH.finditer(line)
        if not names_something(match.group(1))
    ]
    assert not stale, "paths that name nothing in the repository:\n" + "\n".join(stale)


# `python benchmarks/x.py` runs without the repository root on sys.path: the benchmarks
# import each other as `benchmarks.x`, so they run as modules (`python -m benchmarks.x`).
SCRIPT_RUN = re.compile(r"python3?\s+benchmarks/\w+\.py")


def test_benchmarks_are_run_as_modules() -> None:
    scripts = [
        f"{doc.relative_to(ROOT)}:{number}: {match.group(0)}"
        for doc in documents()
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        for match in SCRIPT_RUN.finditer(line)
    ]
    assert not scripts, "run them as `python -m benchmarks.<name>`:\n" + "\n".join(scripts)


def test_every_reason_code_is_in_the_contract_table() -> None:
    """docs/contract.md's validation table names every dead-letter reason, and no other."""
    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    start = contract.index("### Validation and reason codes")
    table = contract[start : contract.index("Choices where the contract is silent", start)]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # no header
    cells = [re.sub(r"\(.*?\)", "", row.split("|")[3]) for row in rows]  # not "(field `app`)"
    documented = {code for cell in cells for code in re.findall(r"`([a-z0-9_]+)`", cell)}
    assert documented == set(REASONS)
