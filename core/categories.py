"""The category taxonomy (CONTRACT §4–5): the canonical list and the work categories.

Patterns, the LLM prompt and output validation all use this one list.
"""

from __future__ import annotations

from typing import Final

# The taxonomy, in the contract's order (CONTRACT §5): each category, and whether its time
# also counts towards the `work` leaderboards (CONTRACT §4). The one place both are written.
TAXONOMY: Final[tuple[tuple[str, bool], ...]] = (
    ("Development", True),
    ("LLM", True),
    ("Documentation", True),
    ("Design", True),
    ("Video Editing", True),
    ("Education", True),
    ("Productivity", True),
    ("Finance", True),
    ("File Management", True),
    ("Browsing", True),
    ("Marketing", True),
    ("System & Utilities", True),
    ("Meetings", True),
    ("Communication", False),
    ("SNS", False),
    ("Entertainment", False),
    ("Game", False),
    ("Music", False),
    ("E-commerce & Shopping", False),
    ("AFK", False),
    ("Uncategorized", False),
)

CATEGORIES: Final[tuple[str, ...]] = tuple(name for name, _ in TAXONOMY)

CATEGORY_SET: Final[frozenset[str]] = frozenset(CATEGORIES)

# Categories whose time also counts towards the `work` leaderboards.
WORK_CATEGORIES: Final[frozenset[str]] = frozenset(name for name, work in TAXONOMY if work)

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
