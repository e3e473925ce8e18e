"""Liveness: is the event loop turning, and is every lane getting on with its step?

`/healthz` is answered by a thread of its own (shell/health.py), so answering proves
nothing about the consumer. It reads hearts instead:

- the **event loop's** heart, beaten by a task every `period_s`: a loop blocked by a CPU
  loop or a blocking call (a `time.sleep`, a synchronous client) stops beating;
- one heart per **lane**, beaten at each step of its read → process → commit loop. A
  step that awaits something with a timeout of its own (an XREADGROUP BLOCK, a backoff
  wait, one attempt at a batch) declares that bound with `waiting(bound_s)`: the lane
  stays alive while the bound holds. A lane awaiting something that never ends (a
  future nobody resolves, a call without a timeout) stops beating.

A heart is overdue when it has not beaten for `limit_s` beyond its declared bound; the
process is alive while no heart is overdue. Hearts are written by the event loop and
read by the HTTP thread: a float attribute is read or written whole, so no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

Clock = Callable[[], float]

LOOP = "event loop"
MAX_BEAT_PERIOD_S = 1.0


class Heart:
    """The last sign of life of one loop (the event loop, or a lane)."""

    __slots__ = ("_bounds", "_clock", "beat_at", "bound_until", "name", "stopped")

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.beat_at = clock()
        self.bound_until = 0.0  # while in a bounded wait: when the last bound passes
        self._bounds: list[float] = []  # the bounds of the waits in progress (tasks of a lane)
        self.stopped = False  # a loop that ended is not stuck

    def beat(self) -> None:
        self.beat_at = self._clock()

    @contextlib.contextmanager
    def waiting(self, bound_s: float) -> Iterator[None]:
        """Within the block the heart also counts as alive until `bound_s` from now.

        Blocks may nest and may overlap in time: a lane's loop and the batches it finishes
        in the background (consumers/consumer.py) share its heart, and it is alive while
        any of their bounds holds."""
        self.beat()
        until = self.beat_at + bound_s
        self._bounds.append(until)
        self.bound_until = max(self.bound_until, until)
        try:
            yield
        finally:
            self._bounds.remove(until)
            self.bound_until = max(self._bounds, default=0.0)
            self.beat()

    def stop(self) -> None:
        self.stopped = True

    def overdue_s(self, now: float, limit_s: float) -> float:
        """Seconds past `limit_s` of silence after its last beat or declared bound."""
        if self.stopped:
            return 0.0
        return max(0.0, now - max(self.beat_at, self.bound_until) - limit_s)


class Liveness:
    """The hearts of one consumer process, and the verdict `/healthz` serves."""

    def __init__(self, limit_s: float, clock: Clock = time.monotonic) -> None:
        if limit_s <= 0:
            raise ValueError("limit_s must be positive")
        self.limit_s = limit_s
        self._clock = clock
        self.hearts: list[Heart] = []
        self.loop = self.heart(LOOP)
        # Several beats per limit: a loop that is merely busy never looks blocked.
        self.period_s = min(MAX_BEAT_PERIOD_S, limit_s / 4)

    def heart(self, name: str) -> Heart:
        heart = Heart(name, self._clock)
        self.hearts.append(heart)
        return heart

    def overdue(self) -> dict[str, float]:
        """The hearts past their limit, with how long (empty: alive)."""
        now = self._clock()
        late = {h.name: h.overdue_s(now, self.limit_s) for h in self.hearts}
        return {name: round(s, 3) for name, s in late.items() if s > 0}

    def alive(self) -> bool:
        return not self.overdue()

    async def beat_loop(self, _stop: asyncio.Event) -> None:
        """Beat the event loop's heart until cancelled (through a drain too: a draining
        loop must still look alive)."""
        while True:
            self.loop.beat()
            await asyncio.sleep(self.period_s)
