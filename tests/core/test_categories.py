"""The taxonomy in core/categories.py is the contract's (docs/contract.md): the category
list in order, and which categories also count towards the `work` leaderboards."""

from __future__ import annotations

import re
from pathlib import Path

from pomocore.core.categories import CATEGORIES, TAXONOMY, WORK_CATEGORIES, is_work

CONTRACT = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text("utf-8")


def section(title: str) -> str:
    start = CONTRACT.index(f"\n## {title}\n")
    end = CONTRACT.find("\n## ", start + 1)
    return CONTRACT[start : end if end >= 0 else None]


def test_the_taxonomy_is_the_contract_table() -> None:
    rows = re.findall(r"^\| (.+?) \| (yes|no) \|$", section("Categories"), re.M)
    assert [(name, work == "yes") for name, work in rows] == list(TAXONOMY)


def test_the_work_categories_are_the_ones_the_leaderboard_section_names() -> None:
    listed = re.search(
        r"An event of a work category \((.+?)\)\s+also adds", section("Leaderboards"), re.S
    )
    assert listed is not None
    names = {" ".join(name.split()) for name in listed.group(1).split(",")}
    assert names == WORK_CATEGORIES
    assert len(WORK_CATEGORIES) == 13


def test_categories_and_work_derive_from_the_taxonomy() -> None:
    assert len(set(CATEGORIES)) == len(CATEGORIES) == 21
    assert set(CATEGORIES) > WORK_CATEGORIES
    assert [c for c in CATEGORIES if is_work(c)] == [n for n, work in TAXONOMY if work]
