"""Category decisions for (app, url, title): patterns first, then the LLM."""

from classifiers.categories import (
    BROWSING,
    CATEGORIES,
    CATEGORY_SET,
    UNCATEGORIZED,
    WORK,
    WORK_CATEGORIES,
    canonical,
    is_work,
)
from classifiers.decision import ClassKey, Decision

__all__ = [
    "BROWSING",
    "CATEGORIES",
    "CATEGORY_SET",
    "UNCATEGORIZED",
    "WORK",
    "WORK_CATEGORIES",
    "ClassKey",
    "Decision",
    "canonical",
    "is_work",
]
