"""Fixtures of the classifier tests; servers come from tests/conftest.py."""

from __future__ import annotations

import pytest

from pomocore.classifiers.engine import Classifier
from tests.support.patterns import default_classifier as shipped_classifier


@pytest.fixture(scope="session")
def default_classifier() -> Classifier:
    return shipped_classifier()
