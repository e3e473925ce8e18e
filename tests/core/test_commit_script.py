"""sinks/commit.lua against a real server: validation before any write, all-or-subset."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from pomocore.core.errors import CommitError
from pomocore.core.events import Event
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.sinks.commit import COMMIT_SCRIPT, Committer, script_arguments
from pomocore.sinks.plan import CommitPlan, DeadLetter, IncrementBuilder

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
