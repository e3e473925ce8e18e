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

# Misses per batch from which a consumer's pool is used (POMOCORE_CLASSIFIER_POOL_THRESHOLD).
# On the shared 2-CPU machine the pool never beat inline classification, at any size
# (#15 §7: 0.23-0.68x with 1 worker, 0.32-0.85x with 2, 1,000 to 200,000 misses;
# docs/classification.md): inline costs ~2 µs/key and pickling the keys and answers costs
# about as much, and the workers compete with the consumer for the same cores. A consumer
# batch holds at most 5,000 entries, so the pool is off by default (pool_workers=0) and a
# threshold above POMOCORE_BATCH_SIZE is refused at start-up (core/settings.py).
DEFAULT_POOL_THRESHOLD = 50_000
# Distinct keys from which `pomocore classify --workers N` uses the pool: starting the
# workers costs 40-90 ms here, i.e. the inline time of ~20,000-45,000 keys.
CLI_POOL_THRESHOLD = 50_000
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
