"""Classify cache misses in worker processes, only when it pays.

Measured (benchmarks/README.md): sending whole event dicts makes a pool slower than
inline; compact (app, url, title) tuples in chunks and compact (category, source, pattern)
tuples back are what make it pay, and only for large batches of misses. Each worker keeps
its own compiled Classifier, built once from the pattern documents by the initializer;
on a pattern reload the pool is replaced (`ClassifierPool.rebuild`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import PatternSet
from pomocore.core.decision import ClassKey, Decision

log = logging.getLogger(__name__)

# Misses per batch from which the pool is used. On the 2-CPU benchmark machine the pool
# never beat inline classification (0.3-0.8x up to 100,000 misses, benchmarks/README.md):
# inline costs ~2.7 µs/key and pickling the keys and answers costs about as much. So the
# pool is off by default (pool_workers=0) and, when enabled, only used for batches far
# beyond a consumer's batch size; re-measure on the target machine before lowering this.
DEFAULT_POOL_THRESHOLD = 50_000
CHUNK = 2_000

_worker: Classifier | None = None


def _init_worker(documents: list[dict[str, Any]]) -> None:
    global _worker
    _worker = Classifier.from_patterns(PatternSet.from_documents(documents))


def _classify_chunk(keys: list[ClassKey]) -> list[tuple[str, str, str]]:
    assert _worker is not None, "worker initializer did not run"
    out: list[tuple[str, str, str]] = []
    for app, url, title in keys:
        d = _worker.classify(app, url, title)
        out.append((d.category, d.source, d.pattern))
    return out


class ClassifierPool:
    """A ProcessPoolExecutor whose workers hold a compiled Classifier."""

    def __init__(self, pattern_set: PatternSet, workers: int | None = None) -> None:
        self.workers = workers or max(1, (os.cpu_count() or 2) - 1)
        self._executor = self._start(pattern_set)

    def _start(self, pattern_set: PatternSet) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            initializer=_init_worker,
            initargs=(pattern_set.documents(),),
        )

    def rebuild(self, pattern_set: PatternSet) -> None:
        """New workers with the new patterns; the old pool finishes what it has."""
        old, self._executor = self._executor, self._start(pattern_set)
        old.shutdown(wait=False, cancel_futures=False)

    def classify(self, keys: Sequence[ClassKey]) -> list[Decision]:
        chunks = [list(keys[i : i + CHUNK]) for i in range(0, len(keys), CHUNK)]
        out: list[Decision] = []
        for part in self._executor.map(_classify_chunk, chunks):
            out.extend(Decision(c, s, p) for c, s, p in part)  # type: ignore[arg-type]
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
