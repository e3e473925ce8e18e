"""Helpers for classifier tests; servers come from tests/conftest.py."""

from __future__ import annotations

from typing import Any

import pytest

from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import PatternSet, load_default_pattern_set


def make_set(*docs: dict[str, Any]) -> PatternSet:
    return PatternSet.from_documents(docs)


def make_classifier(*docs: dict[str, Any]) -> Classifier:
    return Classifier.from_patterns(make_set(*docs))


@pytest.fixture(scope="session")
def default_classifier() -> Classifier:
    return Classifier.from_patterns(load_default_pattern_set())
