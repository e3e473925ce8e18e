"""Learning: an app or host the LLM keeps classifying the same way becomes a pattern.

Per subject — the app name for non-browser apps, the host for browser URLs — Redis counts
verdicts by category (`{learning_key_prefix}:{kind}:{subject}`, a hash). After
`learn_after` verdicts that are *all* the same category, the subject is added to that
category's `category_pattern` document as `{"pattern": ..., "learned": true}` and the
pattern version is bumped and published, so running consumers reload and stop asking the
LLM for it. Unanimity is required because a host such as youtube.com is Education for a
lecture and Entertainment otherwise: mixed verdicts mean titles matter, and a host
pattern would be wrong.

The pattern is written through `pomocore.classifiers.store` (read set, `with_pattern`, save). Its
review record — verdict count, time, status — goes to our own `learned_pattern_review`
collection. An operator reviews learned patterns with `pomocore patterns learned` and can
reject one; a rejected pattern is removed from the set, marked `rejected` in the review
collection and never learned again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.store import load_or_seed_patterns, publish_change, save_patterns
from pomocore.classifiers.urls import NETWORK_SCHEMES, is_ip, split_url
from pomocore.core.categories import BROWSING
from pomocore.core.decision import ClassKey
from pomocore.core.keys import KeySpace

log = logging.getLogger(__name__)

Kind = Literal["app", "domain"]
# Our own review log (metadata and operator rejections) beside category_pattern.
REVIEW_COLLECTION = "learned_pattern_review"
# Counters of a subject that stops appearing expire; the evidence must be recent-ish.
COUNTER_TTL_S = 30 * 86_400
MAX_SUBJECT_CHARS = 200

# Never learn a browser as an app pattern: that would classify every tab the same.
# Used when the consumer does not pass the classifier's own `is_browser`.
_BROWSER_WORDS = (
    "chrome", "chromium", "safari", "firefox", "edge", "opera", "brave", "vivaldi", "whale",
    "arc", "browser", "internet explorer", "yandex", "duckduckgo", "floorp", "zen",
)


def looks_like_browser(app: str) -> bool:
    words = " ".join(app.lower().split())
    return any(w == words or f"{w} " in f"{words} " for w in _BROWSER_WORDS)


@dataclass(frozen=True, slots=True)
class LearnedPattern:
    kind: Kind
    pattern: str
    category: str
    verdicts: int


def subject_of(key: ClassKey, is_browser: Callable[[str], bool]) -> tuple[Kind, str] | None:
    """What a verdict for this key says something about: its host, or its app."""
    app, url, _title = key
    if url:
        scheme, host, _path = split_url(url)
        if scheme not in NETWORK_SCHEMES or not host or is_ip(host) or "." not in host:
            return None  # internal pages, IPs and localhost say nothing about a site
        host = host.removeprefix("www.")
        return ("domain", host) if len(host) <= MAX_SUBJECT_CHARS else None
    app = " ".join(app.split())
    if not app or len(app) > MAX_SUBJECT_CHARS or is_browser(app):
        return None
    return ("app", app)


class Learner:
    def __init__(
        self,
        redis: aioredis.Redis,
        db: AsyncDatabase[Any] | None,
        keys: KeySpace,
        learn_after: int,
        is_browser: Callable[[str], bool] = looks_like_browser,
    ) -> None:
        self._redis = redis
        self._db = db
        self._keys = keys
        self.learn_after = learn_after
        self.is_browser = is_browser
        # Saving is read set → add → write the whole set: two saves at once (concurrent
        # LLM requests of this process) would each drop the other's pattern.
        self._save_lock = asyncio.Lock()

    def _counter_key(self, kind: Kind, subject: str) -> str:
        return f"{self._keys.learning_key_prefix}:{kind}:{subject.lower()}"

    @property
    def _done_key(self) -> str:
        return f"{self._keys.learning_key_prefix}:done"

    async def observe(self, verdicts: Mapping[ClassKey, str]) -> list[LearnedPattern]:
        """Count the verdicts; return the patterns learned because of them."""
        if self._db is None:
            return []  # nowhere to keep patterns
        subjects: list[tuple[Kind, str, str]] = []
        pipe = self._redis.pipeline(transaction=False)
        for key, category in verdicts.items():
            subject = subject_of(key, self.is_browser)
            if subject is None:
                continue
            kind, text = subject
            if kind == "app" and category == BROWSING:
                continue  # an app in Browsing would make the engine treat it as a browser
            counter = self._counter_key(kind, text)
            pipe.hincrby(counter, category, 1)
            pipe.expire(counter, COUNTER_TTL_S)
            pipe.hgetall(counter)
            subjects.append((kind, text, category))
        if not subjects:
            return []
        replies = await pipe.execute()
        learned: list[LearnedPattern] = []
        for i, (kind, text, category) in enumerate(subjects):
            counts: dict[bytes, bytes] = replies[3 * i + 2]
            total = sum(int(v) for v in counts.values())
            if len(counts) != 1 or total < self.learn_after:
                continue
            member = f"{kind}:{text.lower()}"
            if not await self._redis.sadd(self._done_key, member):
                continue  # another process (or an earlier batch) already handled it
            pattern = LearnedPattern(kind, text, category, total)
            async with self._save_lock:
                saved = await self._save(pattern)
            if saved:
                learned.append(pattern)
        if learned:  # running consumers reload (pomocore.classifiers.reload) and stop asking
            await publish_change(self._redis, self._keys)
        return learned

    async def _save(self, p: LearnedPattern) -> bool:
        assert self._db is not None
        review = self._db[REVIEW_COLLECTION]
        review_id = f"{p.kind}:{p.pattern.lower()}"
        if await review.find_one({"_id": review_id, "status": "rejected"}, {"_id": 1}):
            log.info("not learning %s pattern: rejected by an operator", p.kind)
            return False
        # Through the classification store's own API, so the document format stays theirs.
        current = await load_or_seed_patterns(self._db)
        entry = current.get(p.category)
        existing = entry.app_patterns if p.kind == "app" else entry.domain_patterns
        if any(e.text.lower() == p.pattern.lower() for e in existing):
            return False
        await save_patterns(self._db, current.with_pattern(p.category, p.kind, p.pattern))
        await review.update_one(
            {"_id": review_id},
            {
                "$set": {
                    "kind": p.kind,
                    "pattern": p.pattern,
                    "category": p.category,
                    "verdicts": p.verdicts,
                    "learnedAt": dt.datetime.now(dt.UTC),
                    "status": "learned",
                }
            },
            upsert=True,
        )
        log.info("learned %s pattern for %s after %d verdicts", p.kind, p.category, p.verdicts)
        return True
