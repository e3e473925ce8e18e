"""The README's configuration table is generated from Settings; keep them in sync."""

from __future__ import annotations

from pathlib import Path

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


def test_readme_leads_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    head = readme[: readme.index("## ")]
    assert "make run" in head and "make test" in head
