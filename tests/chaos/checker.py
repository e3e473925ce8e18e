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
- `pomocore leaderboard rebuild --check` finds no difference between the usage logs and
  the leaderboards: every event's usage log names the category its keys received

With an LLM in the run (`llm_labels`), an event the patterns leave undecided may get the
no-LLM rule or any label the LLM answers, and its category may change between two
processings of it; the category its usage log names must be one of those, and the one
whose leaderboard keys received its duration.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
import redis

from pomocore.core.ids import stream_tag, usage_log_id
from pomocore.core.settings import Settings
from pomocore.workload import MALFORMED_KINDS, Workload
from tests.support.expected import (
    REASON_OF_MALFORMED_KIND,
    actual_leaderboards,
    rebuild_check,
    reference_leaderboards,
)
from tests.support.patterns import default_classifier

Fields = dict[str, str | bytes]


@dataclass(slots=True)
class Published:
    entry_id: str
    fields: Fields
    reason: str | None  # None: must be accepted


def generate(
    seed: int, count: int, now_s: float, bad_ratio: float = 0.03, distinct_variants: int = 40
) -> list[Published]:
    """Seeded events with ids left empty (the publisher assigns them)."""
    rng = random.Random(seed)
    workload = Workload(
        users=300,
        distinct_variants=distinct_variants,
        malformed_ratio=0.0,
        session_end_ratio=0.05,
        seed=seed,
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
    def __init__(self, settings: Settings, llm_labels: Sequence[str] = ()) -> None:
        """`llm_labels`: what the run's LLM may answer (empty: no LLM in the run)."""
        self.settings = settings
        self.classifier = default_classifier()
        self.llm_labels = frozenset(llm_labels)

    def allowed(self, app: str, url: str, title: str) -> frozenset[str]:
        """The categories an event of this key may end up with."""
        decision = self.classifier.classify(app, url, title)
        if decision.decided or not self.llm_labels:
            return frozenset((decision.category,))
        return self.llm_labels | {decision.category}

    def category(self, fields: Fields) -> str:
        return self.classifier.classify(
            _s(fields.get("app", "")), _s(fields.get("url", "")), _s(fields.get("title", ""))
        ).category

    def check(self, published: list[Published]) -> list[str]:
        s = self.settings
        violations: list[str] = []
        client = redis.Redis.from_url(s.redis_url)
        mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(s.mongo_uri)
        try:
            accepted = self._accepted(mongo[s.mongo_db], published)
            violations += self._usage_logs(mongo[s.mongo_db], accepted)
            violations += self._references(mongo[s.mongo_db])
            violations += self._leaderboards(accepted)
            violations += self._rebuild_check(accepted)
            violations += self._dead_letters(client, published)
            violations += self._sessions(client, accepted)
            violations += self._group(client)
        finally:
            client.close()
            mongo.close()
        return violations

    def _accepted(self, db: Any, published: list[Published]) -> list[tuple[Fields, str]]:
        """Each accepted event with the category it must have. With an LLM, an undecided
        event's is its usage log's when that is allowed (which one the run chose is not
        the checker's to know); otherwise the no-LLM rule's, so the difference shows."""
        good = [p for p in published if p.reason is None]
        if not self.llm_labels:
            return [(p.fields, self.category(p.fields)) for p in good]
        tag = stream_tag(self.settings.keys.stream_key)
        stored = {
            str(d["_id"]): d.get("category")
            for d in db.pomodoro_usage_log.find({}, {"category": 1})
        }
        out: list[tuple[Fields, str]] = []
        for p in good:
            category = self.category(p.fields)
            logged = stored.get(str(usage_log_id(tag, p.entry_id)))
            if logged != category and logged in self._allowed_of(p.fields):
                category = logged
            out.append((p.fields, category))
        return out

    def _allowed_of(self, fields: Fields) -> frozenset[str]:
        return self.allowed(
            _s(fields.get("app", "")), _s(fields.get("url", "")), _s(fields.get("title", ""))
        )

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
        """Every usage log points to a durable categorized_data document of its category
        (with an LLM, of an allowed category: the document follows the latest decision,
        the usage log keeps the one its event was counted with)."""
        fields = {"category": 1, "app": 1, "url": 1, "title": 1}
        stored = {d["_id"]: d for d in db.categorized_data.find({}, fields)}
        out = []
        for log in db.pomodoro_usage_log.find({}, {"categorizedDataId": 1, "category": 1}):
            ref = log.get("categorizedDataId")
            doc = stored.get(ref)
            if doc is None:
                out.append(f"usage log {log['_id']}: categorized_data {ref} missing")
                continue
            have, want = log.get("category"), doc.get("category")
            allowed = self.allowed(doc.get("app", ""), doc.get("url", ""), doc.get("title", ""))
            if have != want and not (self.llm_labels and {have, want} <= allowed):
                out.append(f"usage log {log['_id']}: {have} != {want}")
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

    def _rebuild_check(self, accepted: list[tuple[Fields, str]]) -> list[str]:
        """`pomocore leaderboard rebuild --check`: the usage logs against the leaderboards."""
        differences = rebuild_check(self.settings, (fields for fields, _ in accepted))
        return [f"rebuild --check: {d}" for d in differences]

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
