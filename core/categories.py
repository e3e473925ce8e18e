"""The canonical category list (CONTRACT §5).

Patterns, the LLM prompt and output validation all use this one list.
"""

from __future__ import annotations

from typing import Final

CATEGORIES: Final[tuple[str, ...]] = (
    "Development",
    "LLM",
    "Documentation",
    "Design",
    "Video Editing",
    "Education",
    "Productivity",
    "Finance",
    "File Management",
    "Browsing",
    "Marketing",
    "System & Utilities",
    "Meetings",
    "Communication",
    "SNS",
    "Entertainment",
    "Game",
    "Music",
    "E-commerce & Shopping",
    "AFK",
    "Uncategorized",
)

CATEGORY_SET: Final[frozenset[str]] = frozenset(CATEGORIES)

# Categories whose time also counts towards the `work` leaderboards (CONTRACT §4).
WORK_CATEGORIES: Final[frozenset[str]] = frozenset(
    {
        "Development",
        "LLM",
        "Documentation",
        "Design",
        "Video Editing",
        "Education",
        "Productivity",
        "Finance",
        "File Management",
        "Browsing",
        "Marketing",
        "System & Utilities",
        "Meetings",
    }
)

# The aggregate leaderboard category for WORK_CATEGORIES.
WORK: Final = "work"

BROWSING: Final = "Browsing"
UNCATEGORIZED: Final = "Uncategorized"

_BY_LOWER: Final[dict[str, str]] = {c.lower(): c for c in CATEGORIES}


def canonical(name: str) -> str | None:
    """The canonical spelling of a category name (case/space-insensitive), or None."""
    return _BY_LOWER.get(" ".join(name.split()).lower())


def is_work(category: str) -> bool:
    return category in WORK_CATEGORIES
