"""Background reclassifier: resolves queued keys once the LLM is back.

While the LLM is down, open or over budget, `resolve` gives events the no-LLM rule and
queues their keys. This task takes due keys from the queue (with a lease, see queue.py),
asks the LLM through the same resolver (same batching, budget, circuit and memory) and
corrects the key's `categorized_data` document: category, categoryId, isLLMBased true.

What it does NOT correct, by design: leaderboard increments and `pomodoro_usage_log`
documents already written keep the no-LLM category. Leaderboard scores are sums that
readers have already seen; moving seconds between categories after the fact would make
published rankings jump. Only future events of the key use the LLM verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.llm.errors import LLMBadAnswer
from pomocore.classifiers.llm.resolver import LLMResolver, Verdict
from pomocore.core.decision import ClassKey
from pomocore.core.ids import categorized_data_id

log = logging.getLogger(__name__)

CATEGORIZED_DATA = "categorized_data"
# A queued key whose document is not written yet is retried this many times.
MAX_MISSING_DOC_TRIES = 5


class Reclassifier:
    def __init__(
        self,
        resolver: LLMResolver,
        db: AsyncDatabase[Any] | None,
        category_id: Callable[[str], Any] | Mapping[str, Any],
        *,
        idle_s: float = 5.0,
        retry_s: float = 30.0,
    ) -> None:
        self.resolver = resolver
        self._db = db
        self._category_id: Callable[[str], Any] = (
            category_id.get if isinstance(category_id, Mapping) else category_id
        )
        self.idle_s = idle_s
        self.retry_s = retry_s
        self._missing: dict[ClassKey, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set. Never raises; a failed round waits `idle_s`."""
        while not stop.is_set():
            handled = 0
            try:
                handled = await self.run_once()
            except Exception as exc:
                log.warning("llm reclassifier round failed: %s", type(exc).__name__)
            if handled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.idle_s)

    async def run_once(self) -> int:
        """One round: claim due keys, resolve, correct. Returns the number of keys claimed."""
        r = self.resolver
        # Keys too old are dropped whether or not the LLM is back (an outage of days
        # must not keep the queue at its cap with keys nobody will correct in time).
        r.stats.queue_dropped["expired"] += await r.queue.expire()
        if not r.available():
            return 0
        lease_s = 2 * r.timeout_s + 10
        keys = await r.queue.claim(r.batch_size, lease_s)
        if not keys:
            return 0
        # The owner each key was queued for: its request and share of the calls, not a
        # learning user (that user counted when its own event asked).
        queued_for = await r.queue.users(keys)
        outcomes = await r.ask(
            keys, users={k: (u,) for k, u in queued_for.items()}, learn_users=False
        )
        done: list[ClassKey] = []
        later: list[ClassKey] = []
        for key, outcome in outcomes.items():
            if isinstance(outcome, Verdict):
                if await self._correct(key, outcome):
                    done.append(key)
                else:
                    later.append(key)
            elif isinstance(outcome, LLMBadAnswer):
                done.append(key)  # the no-LLM rule it already has is final
            else:
                later.append(key)
        await r.queue.done(done)
        await r.queue.retry_later(later, self.retry_s)
        return len(keys)

    async def _correct(self, key: ClassKey, verdict: Verdict) -> bool:
        """True when the document is corrected (or there is no MongoDB to correct)."""
        if self._db is None:
            return True
        result = await self._db[CATEGORIZED_DATA].update_one(
            {"_id": categorized_data_id(*key)},
            {
                "$set": {
                    "category": verdict.category,
                    "categoryId": self._category_id(verdict.category),
                    "isLLMBased": True,
                }
            },
        )
        if result.matched_count:
            self._missing.pop(key, None)
            self.resolver.stats.reclassified += 1
            return True
        # The core has not written the document yet (its batch may be retrying): try
        # again later, a few times; the verdict stays in memory so no new LLM call.
        tries = self._missing.get(key, 0) + 1
        if tries >= MAX_MISSING_DOC_TRIES:
            self._missing.pop(key, None)
            return True
        self._missing[key] = tries
        return False
