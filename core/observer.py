"""What the runtime reports as it works, and the hooks it reports through.

The consumer, its batch processor and the committer call an `Observer` (dramatiq's
middleware, reduced to what pomocore observes); the default one does nothing. Metrics
(`pomocore.metrics.MetricsObserver`) and the benchmark harness are observers: they are
handed to the runtime when it is built, never patched into it afterwards.

Hooks run once per batch or per backend call, never per event, and must not do I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class BatchOutcome:
    """Counters of one committed batch; `ConsumerStats` sums them over a consumer's life."""

    read: int = 0
    accepted: int = 0
    committed: int = 0
    skipped_already_acked: int = 0
    trimmed: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchOutcome) -> None:
        self.read += other.read
        self.accepted += other.accepted
        self.committed += other.committed
        self.skipped_already_acked += other.skipped_already_acked
        self.trimmed += other.trimmed
        for target, source in (
            (self.rejected_by_reason, other.rejected_by_reason),
            (self.sources, other.sources),
            (self.categories, other.categories),
        ):
            for key, n in source.items():
                target[key] = target.get(key, 0) + n


class Observer:
    """Hooks of the runtime; subclass and override what you observe."""

    def batch_committed(
        self, outcome: BatchOutcome, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        """After each committed batch, with the stream entries it was read from.

        A batch with events waiting for the LLM commits in two stages (the events the
        patterns decided first, consumers/batch.py): one call per stage, each with the
        entries that stage committed and the time since the batch's processing began.
        """

    def operation_done(self, backend: str, operation: str, elapsed_s: float) -> None:
        """A backend call finished: ("mongo", "bulk_write"), ("redis", "commit_script")."""

    def operation_failed(self, backend: str, operation: str, error: BaseException) -> None:
        """A backend call raised (cancellation is not a failure and is not reported)."""


class Fanout(Observer):
    """Every hook of several observers, in order (the metrics and the trimmer's commit
    counter, consumers/trimming.py). A hook added to Observer must be forwarded here too:
    tests/core/test_observer.py fails while one is not."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def batch_committed(
        self, outcome: BatchOutcome, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        for o in self.observers:
            o.batch_committed(outcome, elapsed_s, entries)

    def operation_done(self, backend: str, operation: str, elapsed_s: float) -> None:
        for o in self.observers:
            o.operation_done(backend, operation, elapsed_s)

    def operation_failed(self, backend: str, operation: str, error: BaseException) -> None:
        for o in self.observers:
            o.operation_failed(backend, operation, error)


async def observed(observer: Observer, backend: str, operation: str, call: Awaitable[T]) -> T:
    """Await `call`, reporting its duration or its error to `observer`."""
    started = time.perf_counter()
    try:
        result = await call
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        observer.operation_failed(backend, operation, exc)
        raise
    observer.operation_done(backend, operation, time.perf_counter() - started)
    return result
