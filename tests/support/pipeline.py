"""Kept only for benchmarks/drain_ab.py and benchmarks/redis_time.py, which import these
two names from here; tests import tests.support.consumer and tests.support.streams.
Delete this module once the benchmark scripts import from those."""

from tests.support.consumer import drain
from tests.support.streams import publish

__all__ = ["drain", "publish"]
