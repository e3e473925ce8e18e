"""Category decisions for (app, url, title): patterns first, then the LLM."""

from classifiers.cache import CachingClassifier
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
from classifiers.engine import Classifier
from classifiers.patterns import PatternSet, load_default_pattern_set

__all__ = [
    "BROWSING",
    "CATEGORIES",
    "CATEGORY_SET",
    "UNCATEGORIZED",
    "WORK",
    "WORK_CATEGORIES",
    "CachingClassifier",
    "ClassKey",
    "Classifier",
    "Decision",
    "PatternSet",
    "canonical",
    "is_work",
    "load_default_pattern_set",
]
