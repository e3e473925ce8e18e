"""Learning: an app or host the LLM keeps classifying the same way becomes a pattern.

Per subject — the app name for non-browser apps, the host for browser URLs — Redis counts
verdicts by category (`KeySpace.learning_counter_key`, a hash) and the users whose events
brought them (`KeySpace.learning_users_key`, a set). After `learn_after` verdicts that are
*all* the same category, from at least `min_users` distinct users, the subject is added to
that category's `category_pattern` document as `{"pattern": ..., "learned": true}` and the
pattern version is bumped and published, so running consumers reload and stop asking the
LLM for it. Unanimity is required because a host such as youtube.com is Education for a
lecture and Entertainment otherwise: mixed verdicts mean titles matter, and a host
pattern would be wrong. Distinct users are required because a pattern applies to everyone:
one user's crafted titles must not reclassify a host for all (issue #15 §3). A verdict
whose user is unknown (the background reclassifier's) still counts, and can still break
unanimity, but adds no user.

In `approve` mode a subject that qualifies is only recorded as `pending` in the review
collection; `pomocore patterns learned --approve` makes it a pattern. Active plus pending
learned patterns are capped at `max_learned`; a subject over the cap is not promoted (and
is reconsidered at its next verdict once an operator has made room). Subjects refused by
the cap are counted (`Learner.capped`, metric `pomocore_llm_learning_capped`).

The pattern is written through `pomocore.classifiers.store.add_learned_pattern`: one atomic
`$addToSet` on its category's document, never a save of a whole set read earlier, so two
processes learning at the same instant (or an operator approving meanwhile) both keep
their pattern even when the lock below has expired under a slow save. A subject enters
the done set only after its pattern (or pending record) is saved: a crash or a failed
save in between leaves it to its next verdict instead of marking it learned forever. Its
review record — verdict count, time, status — goes to our own `learned_pattern_review`
collection. An operator reviews learned patterns with `pomocore patterns learned` and can
reject one; a rejected pattern is removed from the set, marked `rejected` in the review
collection and never learned again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from pymongo.asynchronous.database import AsyncDatabase
from redis.exceptions import LockError

from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.store import add_learned_pattern, load_or_seed_patterns, publish_change
from pomocore.classifiers.urls import NETWORK_SCHEMES, is_ip, split_url
from pomocore.core.categories import BROWSING
from pomocore.core.decision import ClassKey
from pomocore.core.keys import KeySpace

log = logging.getLogger(__name__)

Kind = Literal["app", "domain"]
Mode = Literal["auto", "approve"]
# Our own review log (metadata and operator rejections) beside category_pattern.
REVIEW_COLLECTION = "learned_pattern_review"
# Counters of a subject that stops appearing expire; the evidence must be recent-ish.
COUNTER_TTL_S = 30 * 86_400
MAX_SUBJECT_CHARS = 200
# Promotions are rare and short (read, extend, save the pattern set): a process that cannot
# take the lock soon leaves the subject for its next verdict instead of waiting.
LOCK_TTL_S = 30.0
LOCK_WAIT_S = 5.0

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
    users: int = 0


@dataclass(slots=True)
class _Evidence:
    """What one observe() call brings for one subject."""

    categories: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    users: set[str] = field(default_factory=set)


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
        *,
        min_users: int = 3,
        mode: Mode = "auto",
        max_learned: int = 500,
        lock_ttl_s: float = LOCK_TTL_S,
    ) -> None:
        self._redis = redis
        self._db = db
        self._keys = keys
        self.learn_after = learn_after
        self.is_browser = is_browser
        self.min_users = min_users
        self.mode = mode
        self.max_learned = max_learned
        self.learned = 0  # patterns this learner made active (each counted at its save)
        self.capped = 0  # subjects that qualified while the learned patterns were at the cap
        self.lock_ttl_s = lock_ttl_s

    async def observe(
        self,
        verdicts: Mapping[ClassKey, str],
        users: Mapping[ClassKey, Collection[str]] | None = None,
    ) -> list[LearnedPattern]:
        """Count the verdicts, each with the users whose events asked for it; return the
        patterns that became active because of them (not those held for approval)."""
        if self._db is None:
            return []  # nowhere to keep patterns
        evidence = self._evidence(verdicts, users or {})
        if not evidence:
            return []
        tallies = await self._count(evidence)
        learned: list[LearnedPattern] = []
        for (kind, text), (counts, n_users) in tallies.items():
            total = sum(counts.values())
            if len(counts) != 1 or total < self.learn_after or n_users < self.min_users:
                continue
            (category,) = counts
            pattern = LearnedPattern(kind, text, category, total, n_users)
            if await self._promote(pattern) == "learned":
                learned.append(pattern)
        if learned:  # running consumers reload (pomocore.classifiers.reload) and stop asking
            await publish_change(self._redis, self._keys)
        return learned

    def _evidence(
        self, verdicts: Mapping[ClassKey, str], users: Mapping[ClassKey, Collection[str]]
    ) -> dict[tuple[Kind, str], _Evidence]:
        out: dict[tuple[Kind, str], _Evidence] = {}
        for key, category in verdicts.items():
            subject = subject_of(key, self.is_browser)
            if subject is None:
                continue
            if subject[0] == "app" and category == BROWSING:
                continue  # an app in Browsing would make the engine treat it as a browser
            ev = out.setdefault(subject, _Evidence())
            ev.categories[category] += 1
            ev.users.update(u for u in users.get(key, ()) if u)
        return out

    async def _count(
        self, evidence: Mapping[tuple[Kind, str], _Evidence]
    ) -> dict[tuple[Kind, str], tuple[dict[str, int], int]]:
        """Add the evidence in Redis; (category counts, distinct users) per subject."""
        pipe = self._redis.pipeline(transaction=False)
        spots: list[tuple[tuple[Kind, str], int, int]] = []
        n = 0
        for (kind, text), ev in evidence.items():
            counter = self._keys.learning_counter_key(kind, text)
            users_key = self._keys.learning_users_key(kind, text)
            for category, count in ev.categories.items():
                pipe.hincrby(counter, category, count)
                n += 1
            if ev.users:
                pipe.sadd(users_key, *sorted(ev.users))
                n += 1
            pipe.expire(counter, COUNTER_TTL_S)
            pipe.expire(users_key, COUNTER_TTL_S)
            pipe.hgetall(counter)
            pipe.scard(users_key)
            spots.append(((kind, text), n + 2, n + 3))
            n += 4
        replies = await pipe.execute()
        out: dict[tuple[Kind, str], tuple[dict[str, int], int]] = {}
        for subject, i_counts, i_users in spots:
            raw: dict[bytes, bytes] = replies[i_counts]
            counts = {k.decode(): int(v) for k, v in raw.items()}
            out[subject] = (counts, int(replies[i_users]))
        return out

    async def _promote(self, p: LearnedPattern) -> str:
        """learned, pending, capped, busy or skipped. The done set lets every process (and
        later batches) skip a subject already handled; a subject enters it only once its
        pattern or pending record is saved (a failure in between: its next verdict)."""
        member = f"{p.kind}:{p.pattern.lower()}"
        done_key = self._keys.learning_done_key
        if await self._redis.sismember(done_key, member):
            return "skipped"  # another process (or an earlier batch) already handled it
        try:
            async with self._redis.lock(
                self._keys.learning_lock_key, timeout=self.lock_ttl_s, blocking_timeout=LOCK_WAIT_S
            ):
                status = await self._save(p)
        except LockError:
            return "busy"  # not taken in time, or expired during the save: next verdict
        if status != "capped":
            await self._redis.sadd(done_key, member)
        return status

    async def _save(self, p: LearnedPattern) -> str:
        assert self._db is not None
        review = self._db[REVIEW_COLLECTION]
        review_id = f"{p.kind}:{p.pattern.lower()}"
        if await review.find_one({"_id": review_id, "status": "rejected"}, {"_id": 1}):
            log.info("not learning %s pattern: rejected by an operator", p.kind)
            return "skipped"
        # Through the classification store's own API, so the document format stays theirs.
        current = await load_or_seed_patterns(self._db)
        entry = current.get(p.category)
        existing = entry.app_patterns if p.kind == "app" else entry.domain_patterns
        if any(e.text.lower() == p.pattern.lower() for e in existing):
            return "skipped"
        if await self._learned_count(current) >= self.max_learned:
            self.capped += 1
            log.warning(
                "not learning %s pattern: %d learned patterns (POMOCORE_LLM_LEARNED_MAX)",
                p.kind, self.max_learned,
            )  # fmt: skip
            return "capped"
        status = "pending" if self.mode == "approve" else "learned"
        if status == "learned":
            await add_learned_pattern(self._db, current, p.category, p.kind, p.pattern)
            self.learned += 1
        await review.update_one({"_id": review_id}, {"$set": review_doc(p, status)}, upsert=True)
        log.info(
            "%s %s pattern for %s after %d verdicts from %d users",
            status, p.kind, p.category, p.verdicts, p.users,
        )  # fmt: skip
        return status

    async def _learned_count(self, current: PatternSet) -> int:
        assert self._db is not None
        pending = await self._db[REVIEW_COLLECTION].count_documents({"status": "pending"})
        return learned_in(current) + pending


def learned_in(pattern_set: PatternSet) -> int:
    """Active learned patterns of a set."""
    return sum(
        p.learned for e in pattern_set.entries for p in (*e.app_patterns, *e.domain_patterns)
    )


def review_doc(p: LearnedPattern, status: str) -> dict[str, Any]:
    """The review record of a learned (or pending) pattern."""
    return {
        "kind": p.kind,
        "pattern": p.pattern,
        "category": p.category,
        "verdicts": p.verdicts,
        "users": p.users,
        "learnedAt": dt.datetime.now(dt.UTC),
        "status": status,
    }
