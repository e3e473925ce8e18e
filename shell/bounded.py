"""Blocking calls that must answer within a deadline: probes and the metrics sampler.

A scrape or a health check has a timeout of its own (Prometheus's scrape timeout, 10 s
by default; Docker's and Kubernetes' probe timeouts). A Redis or MongoDB that stops
answering (SIGSTOP, a network partition) holds a blocking client for its socket timeout
per command, longer than that over several commands. So the call runs in a worker
thread and the caller waits for it at most `timeout_s`: the HTTP answer is on time even
when the dependency is not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class CallTimeout(TimeoutError):
    """The call did not finish within the caller's deadline (it may still be running)."""


class SingleFlight(Generic[T]):
    """Runs `fn` in a daemon thread, one call at a time; each caller waits at most its
    `timeout_s` for the result.

    A caller that arrives while a call is still running waits for that call instead of
    starting another: a dependency that hangs holds one thread, however often it is
    probed, and the next call starts once that one has ended (by its socket timeout).
    """

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._name = name
        self._lock = threading.Lock()
        self._running: Future[T] | None = None

    def call(self, timeout_s: float) -> T:
        """`fn()`'s result or exception; CallTimeout when it takes longer than `timeout_s`."""
        with self._lock:
            future = self._running
            if future is None or future.done():
                future = Future()
                self._running = future
                threading.Thread(
                    target=self._run, args=(future,), name=self._name, daemon=True
                ).start()
        try:
            return future.result(timeout_s)
        except TimeoutError:  # concurrent.futures.TimeoutError is TimeoutError
            if not future.done():
                raise CallTimeout(f"no answer within {timeout_s:g} s") from None
        return future.result()  # it ended just now, or fn raised a TimeoutError itself

    def _run(self, future: Future[T]) -> None:
        try:
            future.set_result(self._fn())
        except BaseException as exc:
            future.set_exception(exc)
