"""Classifiers built for tests: from a few pattern documents, or from the shipped defaults
(which decide the category every published event must get)."""

from __future__ import annotations

import functools
from typing import Any

from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import PatternSet, load_default_pattern_set


def make_set(*docs: dict[str, Any]) -> PatternSet:
    return PatternSet.from_documents(docs)


def make_classifier(*docs: dict[str, Any]) -> Classifier:
    return Classifier.from_patterns(make_set(*docs))


@functools.cache
def default_classifier() -> Classifier:
    """The shipped default patterns, compiled once per test session (a classifier is
    immutable: sharing it cannot leak state between tests)."""
    return Classifier.from_patterns(load_default_pattern_set())
