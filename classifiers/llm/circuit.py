"""Circuit breaker: stop calling an endpoint that keeps failing, probe it again later."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]
STATE_VALUE: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    """Opens after `threshold` consecutive failures for `open_s`; then lets one probe through.

    A successful probe closes it; a failed probe opens it again for another `open_s`.
    Per process: each consumer process learns about an outage from its own calls.
    """

    def __init__(
        self, threshold: int, open_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.opened_count = 0

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.open_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def would_allow(self) -> bool:
        """Like allow() but without taking the probe slot (for fast-path checks)."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._probing)

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            if self._opened_at is None or self._probing:
                self.opened_count += 1
            self._opened_at = self._clock()
            self._probing = False

    def release_probe(self) -> None:
        """A probe slot taken by allow() was not used for a call (e.g. budget spent)."""
        self._probing = False
