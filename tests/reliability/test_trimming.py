"""Stream trimming: never an entry a group still needs, near the bound at full rate, and
the dead-letter and session-score caps (count, age, what they drop is counted).

`XTRIM ~` frees whole stream nodes; with `stream-node-max-entries 1` (the `exact_nodes`
fixture) every node is one entry, so approximate trimming is exact and the tests can
count entries. The rate and safety tests run with the server's default nodes too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from pomocore.consumers.trimming import (
    MAX_TRIM_PER_CALL,
    MIN_PERIOD_S,
    Pass,
    StreamTrimmer,
    caps,
    trimming_enabled,
)
from pomocore.core.observer import BatchOutcome
from pomocore.core.settings import Settings
from tests.support.streams import now_fields, publish
from tests.support.waiting import wait_until


@pytest.fixture
def exact_nodes(redis_url: str) -> Iterator[None]:
    """One entry per stream node on the test's server, for the test only."""
    client = redis.Redis.from_url(redis_url)
    before = client.config_get("stream-node-max-entries")["stream-node-max-entries"]
    client.config_set("stream-node-max-entries", 1)
    try:
        yield
    finally:
        client.config_set("stream-node-max-entries", before)
        client.close()


def ids_of(client: redis.Redis, key: str) -> list[str]:
    return [i.decode() for i, _ in client.xrange(key)]  # type: ignore[union-attr]


@pytest.mark.usefixtures("exact_nodes")
async def test_trim_stops_at_oldest_pending_and_first_undelivered(settings: Settings) -> None:
    s = dataclasses.replace(settings, stream_maxlen=5)
    key = s.keys.stream_key
    client = redis.Redis.from_url(s.redis_url)
    client.xgroup_create(key, s.group, id="0", mkstream=True)
    ids = publish(s.redis_url, key, [now_fields("u", "Code", 1.0) for _ in range(100)])
    client.xreadgroup(s.group, "c", {key: ">"}, count=30)
    client.xack(key, s.group, *ids[:10])
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        trimmer = StreamTrimmer(s, r)
        assert await trimmer.trim_once() == 10  # oldest pending is ids[10]
        assert ids_of(client, key)[0] == ids[10]
        client.xack(key, s.group, *ids[10:30])
        assert await trimmer.trim_once() == 20  # first undelivered is ids[30]
        assert client.xlen(key) == 70
        client.xreadgroup(s.group, "c", {key: ">"})
        client.xack(key, s.group, *ids[30:])
        assert await trimmer.trim_once() == 65
        assert ids_of(client, key) == ids[95:]
        assert trimmer.trimmed_total == 95 and trimmer.dropped["input", "maxlen"] == 95
    finally:
        await r.aclose()


@pytest.mark.usefixtures("exact_nodes")
async def test_the_slowest_group_bounds_the_trim(settings: Settings) -> None:
    s = dataclasses.replace(settings, stream_maxlen=1)
    key = s.keys.stream_key
    client = redis.Redis.from_url(s.redis_url)
    ids = publish(s.redis_url, key, [now_fields("u", "Code", 1.0) for _ in range(50)])
    client.xgroup_create(key, s.group, id="0")
    client.xgroup_create(key, "analytics", id=ids[19])  # has not read ids[20] yet
    client.xreadgroup(s.group, "c", {key: ">"})
    client.xack(key, s.group, *ids)
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        assert await StreamTrimmer(s, r).trim_once() == 20
        assert ids_of(client, key)[0] == ids[20]
    finally:
        await r.aclose()


async def test_nothing_is_trimmed_before_a_group_exists(settings: Settings) -> None:
    """The consumers create the group at id 0 and read the whole stream: a trimmer that
    ran before it (another process's) must leave those entries alone."""
    s = dataclasses.replace(settings, stream_maxlen=10)
    key = s.keys.stream_key
    publish(s.redis_url, key, [now_fields("u", "Code", 1.0) for _ in range(500)])
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        assert await StreamTrimmer(s, r).trim_once() == 0
    finally:
        await r.aclose()
    assert redis.Redis.from_url(s.redis_url).xlen(key) == 500


async def test_no_trimming_when_disabled(settings: Settings) -> None:
    key = settings.keys.stream_key
    publish(settings.redis_url, key, [now_fields("u", "Code", 1.0) for _ in range(10)])
    r = aioredis.Redis.from_url(settings.redis_url)
    try:
        assert await StreamTrimmer(settings, r).trim_once() == 0
    finally:
        await r.aclose()
    assert redis.Redis.from_url(settings.redis_url).xlen(key) == 10


# --- safety and the bound, on any sequence of reads and acknowledgements ---

Step = tuple[str, int]  # ("add" | "read" | "ack", n)
steps = st.lists(
    st.tuples(st.sampled_from(["add", "read", "ack", "trim"]), st.integers(1, 40)),
    min_size=1,
    max_size=25,
)


@pytest.mark.usefixtures("exact_nodes")
@hyp_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=steps, maxlen=st.integers(1, 30), groups=st.integers(1, 2))
def test_trimming_never_drops_a_needed_entry(
    redis_url: str, plan: list[Step], maxlen: int, groups: int
) -> None:
    """After each trim: every pending or undelivered entry of every group is still there,
    and the stream holds exactly max(maxlen, entries from the first needed one on)."""
    s = Settings.from_dsn(redis_url, stream_maxlen=maxlen)
    key = s.keys.stream_key
    client = redis.Redis.from_url(redis_url)
    client.delete(key)
    names = [f"g{i}" for i in range(groups)]
    for name in names:
        client.xgroup_create(key, name, id="0", mkstream=True)
    pending: dict[str, list[str]] = {n: [] for n in names}

    async def trim() -> None:
        r = aioredis.Redis.from_url(redis_url)
        try:
            await StreamTrimmer(s, r).trim_once()
        finally:
            await r.aclose()

    for i, (op, n) in enumerate(plan):
        name = names[i % groups]
        if op == "add":
            publish(redis_url, key, [{"n": str(j)} for j in range(n)])
        elif op == "read":
            got = client.xreadgroup(name, "c", {key: ">"}, count=n)
            pending[name] += [e.decode() for e, _ in got[0][1]] if got else []  # type: ignore[index]
        elif op == "ack" and pending[name]:
            client.xack(key, name, *pending[name][:n])
            del pending[name][:n]
        elif op == "trim":
            before = ids_of(client, key)
            asyncio.run(trim())
            after = ids_of(client, key)
            needed = _first_needed(client, key, pending)
            assert all(p in after for ps in pending.values() for p in ps)
            keep_from = [i for i in before if _le(needed, i)]
            assert len(after) == max(min(maxlen, len(before)), len(keep_from))
            assert after == before[len(before) - len(after) :]  # only the oldest go
    client.close()


def _key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _le(a: str, b: str) -> bool:
    return _key(a) <= _key(b)


def _first_needed(client: redis.Redis, key: str, pending: dict[str, list[str]]) -> str:
    """The oldest entry some group has pending or not yet delivered (past the end of the
    stream when there is none)."""
    candidates: list[str] = [p for ps in pending.values() for p in ps]
    for g in client.xinfo_groups(key):
        last = g["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        later = client.xrange(key, min=f"({last}", count=1)
        if later:
            candidates.append(later[0][0].decode())  # type: ignore[index]
    return min(candidates, key=_key) if candidates else "99999999999999-0"


# --- keeping up ---


async def test_a_backlog_far_past_the_bound_is_trimmed_at_once(settings: Settings) -> None:
    """250,000 acknowledged entries over a bound of 1,000: one run of the background
    task trims them in well under a second (many calls, none waiting for the period);
    the trimmer of old trimmed 50,000 per 10 s."""
    s = dataclasses.replace(settings, stream_maxlen=1_000)
    key = s.keys.stream_key
    client = redis.Redis.from_url(s.redis_url)
    total = 250_000
    assert total > 2 * MAX_TRIM_PER_CALL
    for start in range(0, total, 10_000):
        publish(s.redis_url, key, [{"n": str(i)} for i in range(start, start + 10_000)])
    client.xgroup_create(key, s.group, id="$")  # everything before is not needed
    r = aioredis.Redis.from_url(s.redis_url)
    stop = asyncio.Event()
    trimmer = StreamTrimmer(s, r)
    task = asyncio.create_task(trimmer.run(stop, period_s=10.0))
    try:
        elapsed_s = await wait_until(lambda: client.xlen(key) <= 2_000, timeout_s=5)
    finally:
        stop.set()
        await task
        await r.aclose()
    assert client.xlen(key) <= 2_000, client.xlen(key)
    assert client.xlen(key) >= 1_000
    assert elapsed_s < 2.0, elapsed_s
    client.close()


@pytest.mark.parametrize(
    ("passes", "expected_s"),
    [
        # nothing known yet: the period
        ([Pass("input", 0, -1, 1000)], 10.0),
        # a call that hit its limit: at once
        ([Pass("input", 500_000, 10, 1000, by_count=MAX_TRIM_PER_CALL)], 0.0),
        # trimmed to the bound: not limited
        ([Pass("input", 2_000, 10, 1000, by_count=1_000)], 10.0),
        # a group's position kept it far past the bound: soon again
        ([Pass("input", 50_000, 10, 1000)], 0.1),
        # an age cap that trimmed half a call's limit: more is waiting
        ([Pass("dead_letter", 10, 10, 0, by_age=MAX_TRIM_PER_CALL // 2 + 1)], 0.0),
    ],
)
def test_next_pass_when(passes: list[Pass], expected_s: float) -> None:
    trimmer = StreamTrimmer(Settings.from_env({}), aioredis.Redis(), clock=lambda: 100.0)
    assert trimmer.next_delay_s(passes, 10.0) == expected_s


def test_next_pass_follows_the_rate_of_the_fastest_stream() -> None:
    now = [100.0]
    trimmer = StreamTrimmer(Settings.from_env({}), aioredis.Redis(), clock=lambda: now[0])
    first = [Pass("input", 1000, 0, 100_000), Pass("session_score", 10, 0, 1_000_000)]
    assert trimmer.next_delay_s(first, 10.0) == 10.0
    now[0] = 101.0  # 50,000 input entries/s: 10 % of 100,000 is 0.2 s of them
    second = [Pass("input", 1000, 50_000, 100_000), Pass("session_score", 10, 5_000, 1_000_000)]
    assert trimmer.next_delay_s(second, 10.0) == pytest.approx(0.2)
    now[0] = 102.0  # 10 million/s: clamped to the shortest period
    assert trimmer.next_delay_s([Pass("input", 0, 10_050_000, 100_000)], 10.0) == MIN_PERIOD_S


# --- the dead-letter and session-score caps ---


def test_caps_follow_the_settings() -> None:
    default = Settings.from_env({})
    assert [c.stream for c in caps(default)] == ["dead_letter", "session_score"]
    assert trimming_enabled(default)
    off = Settings.from_env(
        {},
        dead_letter_maxlen=0,
        dead_letter_max_age_s=0,
        session_score_maxlen=0,
        session_score_max_age_s=0,
    )
    assert caps(off) == [] and not trimming_enabled(off)
    assert trimming_enabled(dataclasses.replace(off, stream_maxlen=5))


@pytest.mark.usefixtures("exact_nodes")
async def test_output_streams_are_capped_by_count(settings: Settings) -> None:
    s = dataclasses.replace(
        settings, dead_letter_maxlen=20, session_score_maxlen=5, session_score_max_age_s=0
    )
    keys = s.keys
    client = redis.Redis.from_url(s.redis_url)
    for i in range(38):
        client.xadd(keys.dead_letter_key, {"dlq.reason": f"r{i}"})
    for i in range(12):
        client.xadd(keys.session_score_key, {"userId": f"u{i}", "session": "1"})
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        trimmer = StreamTrimmer(s, r)
        passes = await trimmer.pass_once()
        assert [p.stream for p in passes] == ["dead_letter", "session_score"]
        assert trimmer.dropped == {("dead_letter", "maxlen"): 18, ("session_score", "maxlen"): 7}
        await trimmer.pass_once()  # within the caps now: nothing more
        assert sum(trimmer.dropped.values()) == 25
    finally:
        await r.aclose()
    reasons = [f[b"dlq.reason"] for _, f in client.xrange(keys.dead_letter_key)]  # type: ignore[union-attr]
    assert reasons == [f"r{i}".encode() for i in range(18, 38)]  # the newest kept
    assert client.xlen(keys.session_score_key) == 5
    client.close()


@pytest.mark.usefixtures("exact_nodes")
async def test_output_streams_are_capped_by_age(settings: Settings) -> None:
    now_s = time.time()
    s = dataclasses.replace(settings, dead_letter_max_age_s=3600, session_score_max_age_s=60)
    keys = s.keys
    client = redis.Redis.from_url(s.redis_url)
    two_hours_ago_ms = int((now_s - 7200) * 1000)
    for i in range(4):
        client.xadd(keys.dead_letter_key, {"dlq.reason": "old"}, id=f"{two_hours_ago_ms}-{i}")
        client.xadd(keys.session_score_key, {"userId": "old"}, id=f"{two_hours_ago_ms}-{i}")
    for _ in range(3):
        client.xadd(keys.dead_letter_key, {"dlq.reason": "new"})
        client.xadd(keys.session_score_key, {"userId": "new"})
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        trimmer = StreamTrimmer(s, r, clock=lambda: now_s)
        await trimmer.cap_once()
        assert trimmer.dropped == {("dead_letter", "age"): 4, ("session_score", "age"): 4}
    finally:
        await r.aclose()
    reasons = [f[b"dlq.reason"] for _, f in client.xrange(keys.dead_letter_key)]  # type: ignore[union-attr]
    assert reasons == [b"new"] * 3
    assert client.xlen(keys.session_score_key) == 3
    client.close()


async def test_commits_wake_the_trimmer(settings: Settings) -> None:
    """A burst after a quiet spell: once this process has acknowledged `wake_after`
    entries the next pass comes at once, not at the end of the quiet period."""
    s = dataclasses.replace(settings, stream_maxlen=50_000)
    passes: list[float] = []

    class Counting(StreamTrimmer):
        async def pass_once(self) -> list[Pass]:
            passes.append(time.monotonic())
            return await super().pass_once()

    r = aioredis.Redis.from_url(s.redis_url)
    trimmer = Counting(s, r)
    assert trimmer.wake_after == 5_000  # 10 % of the bound
    stop = asyncio.Event()
    task = asyncio.create_task(trimmer.run(stop, period_s=30.0))
    try:
        await asyncio.sleep(0.2)
        assert len(passes) == 1
        observer = trimmer.observing(None)
        observer.batch_committed(BatchOutcome(), 0.0, [("1-1", None)] * 4_999)
        await asyncio.sleep(0.1)
        assert len(passes) == 1  # not enough yet
        observer.batch_committed(BatchOutcome(), 0.0, [("1-2", None)])
        await asyncio.sleep(0.2)
        assert len(passes) == 2
    finally:
        stop.set()
        await task
        await r.aclose()
