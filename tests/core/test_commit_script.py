"""sinks/commit.lua against a real server: validation before any write, all-or-subset."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from pomocore.core.errors import CommitError, SinkError, WrongKeyType
from pomocore.core.events import Event
from pomocore.core.keys import KeySpace
from pomocore.core.observer import Observer
from pomocore.core.periods import PeriodCalculator
from pomocore.sinks.commit import COMMIT_SCRIPT, Committer, script_arguments
from pomocore.sinks.plan import CommitPlan, DeadLetter, IncrementBuilder
from tests.support.servers import PathRedis, redis_70_binary, running

KEYS = KeySpace()


def setup_pending(url: str, n: int) -> list[str]:
    client = redis.Redis.from_url(url)
    ids = [client.xadd(KEYS.stream_key, {"i": str(i)}).decode() for i in range(n)]
    client.xgroup_create(KEYS.stream_key, "g", id="0")
    client.xreadgroup("g", "c", {KEYS.stream_key: ">"}, count=n)
    return ids


def state(url: str) -> tuple[int, int, int, dict[bytes, float]]:
    client = redis.Redis.from_url(url)
    return (
        client.xpending(KEYS.stream_key, "g")["pending"],
        client.xlen(KEYS.dead_letter_key) if client.exists(KEYS.dead_letter_key) else 0,
        client.xlen(KEYS.session_score_key) if client.exists(KEYS.session_score_key) else 0,
        dict(client.zrange("leaderboard:SNS:2026-11-22", 0, -1, withscores=True)),
    )


def plan(ids: list[str]) -> CommitPlan:
    return CommitPlan(
        ids=list(ids),
        dead_letters=[DeadLetter(ids[-1], {b"x": b"\xff"}, "invalid_utf8", "title")],
        sessions=[("u1", "2026-11-22", 3)],
        blocks=[(("leaderboard:SNS:2026-11-22",), {"u1": 1.5})],
    )


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda argv: argv.__setitem__(-2, "nan"),  # increment not finite
        lambda argv: argv.__setitem__(-2, "abc"),  # increment not a number
        lambda argv: argv.__setitem__(-1, "soon"),  # expire-at not a number
        lambda argv: argv.append("extra"),  # argument count mismatch
        lambda argv: argv.__setitem__(4, "x"),  # id count not a number
        lambda argv: argv.__setitem__(1, "2"),  # mark_derived flag neither 0 nor 1
        lambda argv: argv.__setitem__(2, "0"),  # no segment
        lambda argv: argv.__setitem__(2, "2"),  # a segment more than there is
        lambda argv: argv.__setitem__(6, "1-x"),  # a malformed entry id (the second)
        lambda argv: argv.__setitem__(-5, "2"),  # a block claims more keys than KEYS has
        lambda argv: argv.__setitem__(-5, "0.5"),  # a block's key count not an integer
        lambda argv: argv.__setitem__(-4, "-1"),  # a negative pair count
    ],
)
def test_invalid_arguments_write_nothing(redis_url: str, corrupt: object) -> None:
    ids = setup_pending(redis_url, 3)
    keys, argv = script_arguments(plan(ids), KEYS, "g", "c")
    corrupt(argv)  # type: ignore[operator]
    client = redis.Redis.from_url(redis_url)
    before = state(redis_url)
    with pytest.raises(redis.ResponseError, match="pomocore"):
        client.eval(COMMIT_SCRIPT, len(keys), *keys, *argv)
    assert state(redis_url) == before == (3, 0, 0, {})


async def test_all_pending_commits_everything(redis_url: str) -> None:
    ids = setup_pending(redis_url, 3)
    committer = Committer(aioredis.Redis.from_url(redis_url), KEYS, "g", "c")
    assert await committer.commit_once(plan(ids)) == (True, [])
    assert state(redis_url) == (0, 1, 1, {b"u1": 1.5})
    # Again: nothing is pending any more, so nothing is applied twice.
    assert await committer.commit_once(plan(ids)) == (False, [])
    assert state(redis_url) == (0, 1, 1, {b"u1": 1.5})


async def test_partly_acknowledged_batch_writes_nothing_and_names_the_rest(redis_url: str) -> None:
    ids = setup_pending(redis_url, 4)
    redis.Redis.from_url(redis_url).xack(KEYS.stream_key, "g", ids[0])
    committer = Committer(aioredis.Redis.from_url(redis_url), KEYS, "g", "c")
    done, pending = await committer.commit_once(plan(ids))
    assert not done and pending == ids[1:]
    assert state(redis_url) == (3, 0, 0, {})  # the ids it acknowledged are pending again
    client = redis.Redis.from_url(redis_url)
    owners = client.xpending_range(KEYS.stream_key, "g", "-", "+", 10)
    assert [(o["message_id"].decode(), o["consumer"]) for o in owners] == [
        (i, b"c") for i in ids[1:]
    ]
    # The caller's retry with that subset applies everything once.
    assert await committer.commit_once(plan(ids[1:])) == (True, [])
    assert state(redis_url) == (0, 1, 1, {b"u1": 1.5})


async def test_entries_held_by_another_consumer_are_committed_once(redis_url: str) -> None:
    """A reclaimed batch: the first commit wins; the stale holder's commit writes nothing."""
    ids = setup_pending(redis_url, 3)
    redis.Redis.from_url(redis_url).xclaim(KEYS.stream_key, "g", "thief", 0, ids)
    thief = Committer(aioredis.Redis.from_url(redis_url), KEYS, "g", "thief")
    stale = Committer(aioredis.Redis.from_url(redis_url), KEYS, "g", "c")
    assert await stale.commit_once(plan(ids)) == (True, [])  # pending, whoever holds them
    assert await thief.commit_once(plan(ids)) == (False, [])
    assert state(redis_url) == (0, 1, 1, {b"u1": 1.5})


async def test_every_block_reaches_each_of_its_keys(redis_url: str) -> None:
    """Several categories and two days: each key ends with exactly the plan's sums."""
    ts = 1_795_316_733.0  # 2026-11-22 12:05 in Seoul
    rows = [
        ("u1", 10.0, ts, "Development"), ("u1", 4.0, ts, "Documentation"),
        ("u2", 3.0, ts, "SNS"), ("u1", 1.0, ts - 86_400, "Development"),
        ("u3", 2.5, ts - 86_400, "Development"), ("u2", 0.25, ts, "Development"),
    ]  # fmt: skip
    ids = setup_pending(redis_url, len(rows))
    accepted = [
        (Event(i, u, "a", "t", "", d, t), c) for i, (u, d, t, c) in zip(ids, rows, strict=True)
    ]
    built = IncrementBuilder(KEYS, PeriodCalculator("Asia/Seoul")).plan(accepted, [])
    committer = Committer(aioredis.Redis.from_url(redis_url), KEYS, "g", "c")
    assert await committer.commit_once(built) == (True, [])
    client = redis.Redis.from_url(redis_url)
    assert len(built.increments) == 14  # Development, work: 3 + the other day; Docs, SNS: 3
    for key, users in built.increments.items():
        stored = {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}
        assert stored == users, key
    assert client.xpending(KEYS.stream_key, "g")["pending"] == 0


@pytest.fixture(params=["valkey", "redis-7.0"])
def server_url(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The test server, and a Redis older than 7.2 (another formatting of Lua numbers)."""
    if request.param == "valkey":
        yield redis_url
        return
    binary = redis_70_binary()
    if binary is None:
        pytest.skip("no redis-server older than 7.2 on PATH")
    with running(PathRedis(binary, tmp_path_factory.mktemp("redis70"))) as server:
        yield server.url


# Sums whose shortest text has 17 digits, an exponent, or is subnormal.
AWKWARD = [0.1 + 0.2, 1 / 3, 123456789.123456789, 2.0**53 + 2, 1e16, 1e-7, 5e-324, 86_400.0]


async def test_sums_reach_the_board_as_the_same_doubles(server_url: str) -> None:
    """The block's sums, as script arguments, through ZINCRBY: each score is the double
    sent, bit for bit (on Valkey and on Redis 7.0)."""
    ids = setup_pending(server_url, 1)
    users = {f"u{i}": x for i, x in enumerate(AWKWARD)}
    users["üser \" \x00 ☃"] = 2.5  # JSON escapes in a member
    committed = CommitPlan(ids=ids, blocks=[(("leaderboard:SNS:2026-11-22",), users)])
    committer = Committer(aioredis.Redis.from_url(server_url), KEYS, "g", "c")
    assert await committer.commit_once(committed) == (True, [])
    client = redis.Redis.from_url(server_url)
    stored = client.zrange("leaderboard:SNS:2026-11-22", 0, -1, withscores=True)
    assert {m.decode(): s.hex() for m, s in stored} == {u: x.hex() for u, x in users.items()}


async def test_script_errors_become_commit_errors(redis_url: str) -> None:
    ids = setup_pending(redis_url, 1)
    committer = Committer(aioredis.Redis.from_url(redis_url), KEYS, "no-such-group", "c")
    with pytest.raises(CommitError):
        await committer.commit_once(plan(ids))


async def test_retention_sets_expire_at_on_leaderboard_keys(redis_url: str) -> None:
    ids = setup_pending(redis_url, 2)
    expire_at = 4_000_000_000
    committer = Committer(
        aioredis.Redis.from_url(redis_url), KEYS, "g", "c", lambda key: expire_at
    )
    assert await committer.commit_once(plan(ids)) == (True, [])
    client = redis.Redis.from_url(redis_url)
    assert client.expiretime("leaderboard:SNS:2026-11-22") == expire_at
    assert client.ttl(KEYS.stream_key) == -1  # only leaderboard keys expire


def snapshot(url: str) -> dict[bytes, bytes | None]:
    """Every key's serialized value (a stream's DUMP includes its groups and pending list)."""
    client = redis.Redis.from_url(url)
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


class RecordingObserver(Observer):
    def __init__(self) -> None:
        self.failed: list[tuple[str, str, BaseException]] = []

    def operation_failed(self, backend: str, operation: str, error: BaseException) -> None:
        self.failed.append((backend, operation, error))


@pytest.mark.parametrize(
    ("key", "spoil", "actual", "expected"),
    [
        (KEYS.dead_letter_key, lambda c, k: c.set(k, "x"), "string", "stream"),
        (KEYS.session_score_key, lambda c, k: c.zadd(k, {"m": 1}), "zset", "stream"),
        ("leaderboard:SNS:2026-11-22", lambda c, k: c.hset(k, "u1", 1), "hash", "zset"),
        (KEYS.derived_stale_key, lambda c, k: c.rpush(k, "x"), "list", "set"),
    ],
)
async def test_a_key_of_the_wrong_type_refuses_the_whole_call(
    redis_url: str,
    key: str,
    spoil: Any,
    actual: str,
    expected: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the type check, the XACKs and the writes before the failing one stayed:
    entries acknowledged with part of their effects."""
    ids = setup_pending(redis_url, 3)
    spoil(redis.Redis.from_url(redis_url), key)
    before = snapshot(redis_url)
    observer = RecordingObserver()
    committer = Committer(
        aioredis.Redis.from_url(redis_url), KEYS, "g", "c", mark_derived=True, observer=observer
    )
    with caplog.at_level(logging.ERROR, logger="pomocore.commit"), pytest.raises(WrongKeyType) as e:
        await committer.commit_once(plan(ids))
    assert (e.value.key, e.value.actual, e.value.expected) == (key, actual, expected)
    assert isinstance(e.value, SinkError)  # the consumer holds the batch and retries it
    assert snapshot(redis_url) == before  # nothing acknowledged, nothing written
    assert [(b, o, type(x)) for b, o, x in observer.failed] == [
        ("redis", "commit_script", WrongKeyType)  # pomocore_op_errors{error="WrongKeyType"}
    ]
    assert [r.__dict__["key"] for r in caplog.records] == [key]  # the log line names it
    # Once the key is fixed, the same plan commits everything, once.
    redis.Redis.from_url(redis_url).delete(key)
    assert await committer.commit_once(plan(ids)) == (True, [])
    assert state(redis_url) == (0, 1, 1, {b"u1": 1.5})


async def test_derived_mode_marks_more_days_than_lua_can_unpack(redis_url: str) -> None:
    """4,100 work events on distinct days: 8,200 daily keys in one call, more than the
    8,000 values Lua's unpack() can return (the SADD failed after the XACKs and ZINCRBYs)."""
    days = 4_100
    ids = setup_pending(redis_url, days)
    ts = 1_795_316_733.0  # 2026-11-22 12:05 in Seoul
    builder = IncrementBuilder(KEYS, PeriodCalculator("Asia/Seoul"), derived=True)
    accepted = [
        (Event(i, "u1", "a", "t", "", 2.0, ts - day * 86_400), "Development")
        for day, i in enumerate(ids)
    ]
    built = builder.plan(accepted, [])
    assert len(built.increments) == 2 * days
    committer = Committer(aioredis.Redis.from_url(redis_url), KEYS, "g", "c", mark_derived=True)
    assert await committer.commit_once(built) == (True, [])
    client = redis.Redis.from_url(redis_url)
    assert {k.decode() for k in client.smembers(KEYS.derived_stale_key)} == set(built.increments)
    assert client.xpending(KEYS.stream_key, "g")["pending"] == 0
    pipe = client.pipeline(transaction=False)
    for key in built.increments:
        pipe.zscore(key, "u1")
    assert set(pipe.execute()) == {2.0}


async def test_an_undone_call_gives_back_more_ids_than_lua_can_unpack(redis_url: str) -> None:
    """The undo path puts the acknowledged ids back with XCLAIM in chunks: all 9,000."""
    n = 9_000
    ids = setup_pending(redis_url, n)
    redis.Redis.from_url(redis_url).xack(KEYS.stream_key, "g", ids[4_321])
    committer = Committer(aioredis.Redis.from_url(redis_url), KEYS, "g", "c")
    done, pending = await committer.commit_once(plan(ids))
    assert not done and pending == ids[:4_321] + ids[4_322:]
    assert state(redis_url) == (n - 1, 0, 0, {})
