"""Hypothesis-generated entries mixed into valid traffic: no crash, every bad entry
rejected with a reason, every valid one counted exactly; hostile producers (ids of other
users' documents) change nothing of anyone else's."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from typing import Any

import pymongo
import redis
from bson import ObjectId
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pomocore.consumers.batch import validate
from pomocore.core import events
from pomocore.core.events import FIELDS as CONTRACT_FIELDS
from pomocore.core.events import MAX_DURATION_S, MAX_ENTRY_FIELDS, REASONS, TOO_LARGE, entry_bytes
from pomocore.core.ids import stream_tag, usage_log_id
from pomocore.core.settings import Settings
from tests.support.consumer import drain
from tests.support.expected import (
    actual_leaderboards,
    assert_scores_equal,
    categories_of,
    reference_leaderboards,
)
from tests.support.streams import now_fields, publish

NOW = time.time()
FIELDS = [*CONTRACT_FIELDS, "extra"]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e309",
            "-0",
            "0",
            "1_000",
            "0x10",
            " 5 ",
            "9" * 80,
            "86400",
            "86400.0001",
            "1e-320",
        ]
    ),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(min_value=NOW - 86_400 * 400, max_value=NOW + 86_400).map(lambda f: f"{f:.3f}"),
)
raw_bytes = st.one_of(
    st.binary(max_size=64),
    st.just(b"\xff\xfe\xfd"),
    st.just(b"\xed\xa0\x80"),  # an encoded surrogate: invalid UTF-8
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(min_value=100, max_value=40_000).map(lambda n: b"t" * n),  # oversized
)
value = st.one_of(numbers.map(str.encode), raw_bytes, st.sampled_from([b"true", b"0", b""]))


@st.composite
def fuzz_entry(draw: Any) -> dict[bytes, bytes]:
    base = {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in now_fields("fuzz", "Code", 12.0, title="x.py").items()
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        if draw(st.booleans()):
            base.pop(name.encode(), None)  # missing field
        else:
            base[name.encode()] = draw(value)
    if draw(st.integers(0, 9)) == 0:  # sometimes a wholly random entry
        base = draw(
            st.dictionaries(
                st.binary(min_size=1, max_size=12), st.binary(max_size=30), min_size=1, max_size=6
            )
        )
    return base


@st.composite
def hostile_entry(draw: Any) -> dict[bytes, bytes]:
    """What a hostile producer sends (issue #14 §3): a huge value, a huge field name, or
    hundreds of fields, on an otherwise valid event or alone."""
    base = {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in now_fields("hostile", "Code", 12.0, title="x.py").items()
    }
    if draw(st.booleans()):
        base = {}
    kind = draw(st.sampled_from(["value", "name", "fields"]))
    size = draw(st.sampled_from([100_000, 140_000, 1 << 20]))
    if kind == "value":
        field = draw(st.sampled_from([b"title", b"app", b"url", b"userId", b"extra"]))
        base[field] = draw(st.sampled_from([b"t", "\ud55c".encode()])) * (size // 3)
    elif kind == "name":
        base[b"n" * size] = b"v"
    else:
        count = draw(st.integers(MAX_ENTRY_FIELDS - 10, MAX_ENTRY_FIELDS + 50))
        base.update({f"f{i}".encode(): b"1" for i in range(count)})
    return base


def _flat(entry: dict[bytes, bytes]) -> list[bytes]:
    return [item for pair in entry.items() for item in pair]


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(hostile_entry(), fuzz_entry()), min_size=1, max_size=8))
def test_hostile_producers_are_rejected_by_size_and_leave_no_trace(
    entries: list[dict[bytes, bytes]],
) -> None:
    s = Settings.from_env({})
    events._LAYOUTS.clear()
    for as_flat in (False, True):
        items = [(f"{i + 1}-0", _flat(e) if as_flat else e) for i, e in enumerate(entries)]
        batch = validate(items, s, time.time())  # type: ignore[arg-type]
        assert len(batch.accepted) + len(batch.dead_letters) == len(entries)
        by_id = {d.entry_id: d for d in batch.dead_letters}
        for i, entry in enumerate(entries):
            big = entry_bytes(entry) > s.max_entry_bytes or len(entry) > MAX_ENTRY_FIELDS
            dead = by_id.get(f"{i + 1}-0")
            assert (dead is not None and dead.reason == TOO_LARGE) == big
            if big:  # dead-lettered without a copy of its fields
                assert dead is not None and dead.fields == {}
    # The field-layout cache keeps no producer's long names (a 1 MB name, 300 fields).
    kept = sum(len(name) for names in events._LAYOUTS for name in names)
    assert kept <= 512 * len(events._LAYOUTS)


@hsettings(max_examples=400, deadline=None)
@given(st.lists(fuzz_entry(), min_size=1, max_size=20))
def test_validate_never_crashes_and_every_rejection_has_a_reason(
    entries: list[dict[bytes, bytes]],
) -> None:
    s = Settings.from_env({})
    batch = validate([(f"{i + 1}-0", e) for i, e in enumerate(entries)], s, time.time())
    assert len(batch.accepted) + len(batch.dead_letters) == len(entries)
    for dead in batch.dead_letters:
        assert dead.reason in REASONS
    for event in batch.accepted:
        assert event.user_id and len(event.user_id) <= 128
        assert math.isfinite(event.duration_s) and 0 < event.duration_s <= MAX_DURATION_S
        assert math.isfinite(event.timestamp_s) and event.timestamp_s <= time.time() + 300
        assert event.app or event.title or event.url


@hsettings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    st.lists(st.one_of(fuzz_entry(), fuzz_entry(), hostile_entry()), min_size=20, max_size=60),
    st.randoms(use_true_random=False),
)
def test_fuzz_mixed_into_valid_traffic_end_to_end(
    settings: Settings, fuzz: list[dict[bytes, bytes]], rnd: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    s = dataclasses.replace(
        settings,
        stream=f"fuzz-{tag}",
        dead_letter_stream=f"fuzz-{tag}:dlq",
        session_score_stream=f"fuzz-{tag}:sessions",
        leaderboard_prefix=f"lb{tag}",
        mongo_db=f"fuzz_{tag}",
    )
    valid = [now_fields(f"u{i % 9}", ["Code", "Slack", "Figma"][i % 3], 3.0 + i) for i in range(80)]
    mixed: list[Any] = [("v", e) for e in valid] + [("f", e) for e in fuzz]
    rnd.shuffle(mixed)
    ids = publish(s.redis_url, s.keys.stream_key, [e for _, e in mixed])

    asyncio.run(drain(s))

    client = redis.Redis.from_url(s.redis_url)
    dead = {
        f[b"dlq.entry_id"].decode(): f[b"dlq.reason"].decode()
        for _, f in client.xrange(s.keys.dead_letter_key)
    }
    assert set(dead.values()) <= set(REASONS)
    kinds = dict(zip(ids, (k for k, _ in mixed), strict=True))
    assert all(kinds[i] == "f" for i in dead)  # no valid event rejected
    accepted_fuzz = [e for i, (k, e) in zip(ids, mixed, strict=True) if k == "f" and i not in dead]
    accepted = valid + [
        {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in e.items()}
        for e in accepted_fuzz
    ]
    expected = reference_leaderboards(
        zip(accepted, categories_of(accepted), strict=True), s.timezone, s.leaderboard_prefix
    )
    assert_scores_equal(actual_leaderboards(s.redis_url, s.leaderboard_prefix), expected)
    db: Any = pymongo.MongoClient(s.mongo_uri)[s.mongo_db]
    assert db.pomodoro_usage_log.count_documents({}) == len(accepted)
    assert client.xpending(s.keys.stream_key, s.group)["pending"] == 0


# Hostile producers (issue #14 §1): ids that name another user's usage log, no document,
# the predictable derived id of a future entry, or another key's categorized_data record.
HOSTILE_KINDS = ("own", "plain", "foreign", "unknown", "future", "foreign_record")
REJECTED_AS = {
    "foreign": "foreign_document",
    "unknown": "unknown_document",
    "future": "unknown_document",
}


@hsettings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.sampled_from(HOSTILE_KINDS), min_size=10, max_size=50))
def test_hostile_producers_mixed_into_valid_traffic_end_to_end(
    settings: Settings, kinds: list[str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    s = dataclasses.replace(
        settings,
        stream=f"hostile-{tag}",
        dead_letter_stream=f"hostile-{tag}:dlq",
        session_score_stream=f"hostile-{tag}:sessions",
        leaderboard_prefix=f"lb{tag}",
        mongo_db=f"hostile_{tag}",
    )
    db: Any = pymongo.MongoClient(s.mongo_uri)[s.mongo_db]
    victims = [f"v{i}" for i in range(3)]
    logs = {v: db.pomodoro_usage_log.insert_one({"userId": v}).inserted_id for v in victims}
    record = {"app": "Code", "url": "", "title": "victim.py", "category": "Finance"}
    record_id = db.categorized_data.insert_one(dict(record)).inserted_id
    future_ms = int(time.time() * 1000) + 3_600_000
    events: list[dict[str, Any]] = []
    for n, kind in enumerate(kinds):
        victim = victims[n % len(victims)]
        user = victim if kind in ("own", "plain") else "mallory"
        fields = now_fields(user, ["Code", "Slack", "Figma"][n % 3], 1.0 + n, title=f"t{n}")
        if kind in ("own", "foreign"):
            fields["pomodoroUsageLogId"] = str(logs[victim])
        elif kind == "unknown":
            fields["pomodoroUsageLogId"] = str(ObjectId())
        elif kind == "future":
            future = usage_log_id(stream_tag(s.keys.stream_key), f"{future_ms + n}-0")
            fields["pomodoroUsageLogId"] = str(future)
        elif kind == "foreign_record":
            fields["categorizedDataId"] = str(record_id)
        events.append(fields)
    ids = publish(s.redis_url, s.keys.stream_key, events)

    asyncio.run(drain(s))

    client = redis.Redis.from_url(s.redis_url)
    dead = {
        f[b"dlq.entry_id"].decode(): f[b"dlq.reason"].decode()
        for _, f in client.xrange(s.keys.dead_letter_key)
    }
    expected_dead = {i: REJECTED_AS[k] for i, k in zip(ids, kinds, strict=True) if k in REJECTED_AS}
    assert dead == expected_dead
    counted = [e for e, k in zip(events, kinds, strict=True) if k not in REJECTED_AS]
    expected = reference_leaderboards(
        zip(counted, categories_of(counted), strict=True), s.timezone, s.leaderboard_prefix
    )
    assert_scores_equal(actual_leaderboards(s.redis_url, s.leaderboard_prefix), expected)
    for victim, log_id in logs.items():  # each victim's log is still theirs
        assert db.pomodoro_usage_log.find_one({"_id": log_id})["userId"] == victim
    assert db.categorized_data.find_one({"_id": record_id}) == {"_id": record_id, **record}
    mallory = db.pomodoro_usage_log.count_documents({"userId": "mallory"})
    assert mallory == kinds.count("foreign_record")  # counted under her own key's record
    assert client.xpending(s.keys.stream_key, s.group)["pending"] == 0
