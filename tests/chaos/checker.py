"""The chaos checker: it knows only the published events (and the contract's rules).

The generator labels every event it publishes: accepted, or rejected with the reason the
contract gives for its defect. Expected categories come from the default patterns
(CONTRACT §6). From that alone the checker derives what MongoDB and Redis must hold and
reports every difference as a violation:

- exactly one usage log per accepted event (same user, timestamp, duration, category)
- every leaderboard score equals the sum of its events' durations (float tolerance 1e-6
  relative, summation order), no extra key or member
- every rejected event in the dead-letter stream exactly once, with its reason; nothing
  else in it
- one session-score entry per accepted event with isEnd=true
- the group's pending list empty and nothing undelivered
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pymongo
import redis

from pomocore.core.settings import Settings
from pomocore.workload import MALFORMED_KINDS, Workload
from tests.support.expected import (
    REASON_OF_MALFORMED_KIND,
    actual_leaderboards,
    reference_leaderboards,
)
from tests.support.patterns import default_classifier

Fields = dict[str, str | bytes]


@dataclass(slots=True)
class Published:
    entry_id: str
    fields: Fields
    reason: str | None  # None: must be accepted


def generate(seed: int, count: int, now_s: float, bad_ratio: float = 0.03) -> list[Published]:
    """Seeded events with ids left empty (the publisher assigns them)."""
    rng = random.Random(seed)
    workload = Workload(
        users=300, distinct_variants=40, malformed_ratio=0.0, session_end_ratio=0.05, seed=seed
    )
    out: list[Published] = []
    for _ in range(count):
        if rng.random() < bad_ratio:
            kind = rng.choice(MALFORMED_KINDS)
            fields = workload.malformed(kind, now_s)
            out.append(Published("", fields, REASON_OF_MALFORMED_KIND[kind]))
        else:
            out.append(Published("", workload.event(now_s), None))
    return out


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Checker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.classifier = default_classifier()

    def category(self, fields: Fields) -> str:
        return self.classifier.classify(
            _s(fields.get("app", "")), _s(fields.get("url", "")), _s(fields.get("title", ""))
        ).category

    def check(self, published: list[Published]) -> list[str]:
        s = self.settings
        accepted = [(p.fields, self.category(p.fields)) for p in published if p.reason is None]
        violations: list[str] = []
        client = redis.Redis.from_url(s.redis_url)
        mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(s.mongo_uri)
        try:
            violations += self._usage_logs(mongo[s.mongo_db], accepted)
            violations += self._references(mongo[s.mongo_db])
            violations += self._leaderboards(accepted)
            violations += self._dead_letters(client, published)
            violations += self._sessions(client, accepted)
            violations += self._group(client)
        finally:
            client.close()
            mongo.close()
        return violations

    def _usage_logs(self, db: Any, accepted: list[tuple[Fields, str]]) -> list[str]:
        def key(user: Any, ts: Any, dur: Any, cat: Any) -> tuple[str, float, float, str]:
            return (str(user), round(float(ts), 6), round(float(dur), 6), str(cat))

        want = Counter(
            key(_s(f["userId"]), _s(f["timestamp"]), _s(f["duration"]), c) for f, c in accepted
        )
        have = Counter(
            key(d.get("userId"), d.get("timestamp"), d.get("duration"), d.get("category"))
            for d in db.pomodoro_usage_log.find(
                {}, {"userId": 1, "timestamp": 1, "duration": 1, "category": 1, "_id": 0}
            )
        )
        out = [f"usage log missing: {k} x{n}" for k, n in (want - have).items()]
        out += [f"usage log extra or duplicated: {k} x{n}" for k, n in (have - want).items()]
        return out

    def _references(self, db: Any) -> list[str]:
        """Every usage log points to a durable categorized_data document of its category."""
        stored = {
            d["_id"]: d.get("category") for d in db.categorized_data.find({}, {"category": 1})
        }
        out = []
        for log in db.pomodoro_usage_log.find({}, {"categorizedDataId": 1, "category": 1}):
            ref = log.get("categorizedDataId")
            if ref not in stored:
                out.append(f"usage log {log['_id']}: categorized_data {ref} missing")
            elif stored[ref] != log.get("category"):
                out.append(f"usage log {log['_id']}: {log.get('category')} != {stored[ref]}")
        return out

    def _leaderboards(self, accepted: list[tuple[Fields, str]]) -> list[str]:
        s = self.settings
        expected = reference_leaderboards(accepted, s.timezone, s.leaderboard_prefix)
        actual = actual_leaderboards(s.redis_url, s.leaderboard_prefix)
        out: list[str] = []
        for k in sorted(set(actual) ^ set(expected)):
            out.append(f"leaderboard key {'extra' if k in actual else 'missing'}: {k}")
        for k in sorted(set(actual) & set(expected)):
            have, want = actual[k], expected[k]
            for user in sorted(set(have) | set(want)):
                a, e = have.get(user), want.get(user)
                if a is None or e is None or abs(a - e) > 1e-6 * max(1.0, abs(e)):
                    out.append(f"leaderboard score wrong: {k} {user}: {a} != expected {e}")
        return out

    def _dead_letters(self, client: redis.Redis, published: list[Published]) -> list[str]:
        found: dict[str, list[str]] = {}
        for _, f in client.xrange(self.settings.keys.dead_letter_key):  # type: ignore[union-attr]
            entry = _s(f.get(b"dlq.entry_id", b""))
            found.setdefault(entry, []).append(_s(f.get(b"dlq.reason", b"")))
        out: list[str] = []
        for p in published:
            if p.reason is None:
                continue
            reasons = found.pop(p.entry_id, [])
            if reasons != [p.reason]:
                out.append(f"dead letter of {p.entry_id}: {reasons} != [{p.reason}]")
        out += [f"unexpected dead letter of {e}: {r}" for e, r in found.items()]
        return out

    def _sessions(self, client: redis.Redis, accepted: list[tuple[Fields, str]]) -> list[str]:
        want = Counter(
            (_s(f["userId"]), _s(f["sessionDate"]), int(_s(f["session"])))
            for f, _ in accepted
            if _s(f.get("isEnd", "")).lower() in ("true", "1")
        )
        have = Counter(
            (_s(f[b"userId"]), _s(f[b"sessionDate"]), int(f[b"session"]))
            for _, f in client.xrange(self.settings.keys.session_score_key)  # type: ignore[union-attr]
        )
        out = [f"session score missing: {k} x{n}" for k, n in (want - have).items()]
        out += [f"session score extra: {k} x{n}" for k, n in (have - want).items()]
        return out

    def _group(self, client: redis.Redis) -> list[str]:
        s = self.settings
        for g in client.xinfo_groups(s.keys.stream_key):  # type: ignore[union-attr]
            if _s(g["name"]) == s.group:
                lag, pending = int(g.get("lag") or 0), int(g["pending"])
                out = []
                if pending:
                    out.append(f"pending list not empty: {pending}")
                if lag:
                    out.append(f"entries never delivered: {lag}")
                return out
        return ["consumer group missing"]
