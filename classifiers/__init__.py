"""Category decisions for (app, url, title): patterns first, then the LLM."""

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import PatternSet, load_default_pattern_set
from pomocore.core.categories import (
    BROWSING,
    CATEGORIES,
    CATEGORY_SET,
    UNCATEGORIZED,
    WORK,
    WORK_CATEGORIES,
    canonical,
    is_work,
)
from pomocore.core.decision import ClassKey, Decision

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
