"""The readers over shards on real servers: the same events, ZINCRBY'd into each user's
shard key (POMOCORE_SHARDS=6) and into one unsharded key, read back alike through the
sync and async readers: top (several pages), ranks (ties, absent users), around (the top
user, the last one, n larger than the board) and count. On a standalone Valkey and on the
local 3-node Redis Cluster, where the shards' keys sit on different nodes. The CLI and
the HTTP API hide the shards too."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from pomocore.core.connect import no_async_retry, no_retry
from pomocore.core.errors import BackendUnavailable
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.core.shard_reads import TIE_PAGE
from pomocore.core.shards import shard_of
from pomocore.embedded import EmbeddedRedis, free_port
from pomocore.http_api import LeaderboardHTTPServer
from pomocore.reader import (
    MAX_SHARDED_DEPTH,
    AsyncLeaderboardReader,
    LeaderboardReader,
    QueryError,
)
from tests.support.http_client import http_get
from tests.support.processes import run_cli
from tests.support.servers import cluster_settings, redis_cluster

pytestmark = pytest.mark.timeout(180)

SHARDS = 6
DAY = "2026-02-12"
BOARD = ("work", "daily", DAY)
USERS = 1400


def totals() -> dict[str, float]:
    out: dict[str, float] = {}
    for user, duration in events():
        out[user] = out.get(user, 0.0) + duration
    return out


def events(seed: int = 5) -> list[tuple[str, float]]:
    """(user, duration) increments: USERS users; a pomodoro (1500 s) is so common that
    hundreds of users tie at exactly 1500.0, more than one tie page per shard; others
    tie at small scores; user ids share prefixes and carry non-ASCII bytes."""
    rng = random.Random(seed)
    out: list[tuple[str, float]] = []
    for i in range(USERS):
        user = rng.choice(["u", "U", "user-", "\u00e9", "\ud55c"]) + str(i)
        if i % 7 < 5:  # one pomodoro, sometimes in two parts
            out += [(user, 1000.0), (user, 500.0)] if i % 2 else [(user, 1500.0)]
        else:
            out += [(user, float(rng.randrange(1, 6) * 300)) for _ in range(rng.randrange(1, 4))]
    return out


def fill(client: Any, settings: Settings, single: str) -> list[str]:
    """The events into each user's shard key and into the key `single`; the users."""
    pipe = client.pipeline(transaction=False)
    users: dict[str, None] = {}
    for user, duration in events():
        shard = settings.shard_keys(shard_of(user, settings.shards))
        pipe.zincrby(shard.leaderboard("work", DAY), duration, user)
        pipe.zincrby(single, duration, user)
        users[user] = None
    pipe.execute()
    return list(users)


def queries(users: list[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """(method, arguments after the board): pages, ranks, windows, the count."""
    tied = [u for u, score in totals().items() if score == 1500.0][::12]
    pages = [(10, 0), (1, 0), (100, 0), (1000, 0), (7, 95), (50, 300), (1000, 400),
             (10, USERS - 5), (20, USERS + 10)]  # fmt: skip
    q: list[tuple[str, tuple[Any, ...]]] = [("count", ())]
    q += [("top", page) for page in pages]
    q += [("rank", (u,)) for u in [*users[:30], *tied, "nobody", "u1x"]]
    q += [("ranks", ([*users[30:90], "nobody"],)), ("ranks", (tied,))]
    q += [("around", (u, n)) for u in [*users[:20], *tied[:10], "nobody"] for n in (0, 1, 5)]
    return q


def ask(reader: LeaderboardReader, method: str, args: tuple[Any, ...]) -> Any:
    if method in ("count",):
        return reader.count(*BOARD)
    if method == "top":
        return reader.top(*BOARD, limit=args[0], offset=args[1])
    if method == "around":
        return reader.around(args[0], *BOARD, n=args[1])
    return getattr(reader, method)(args[0], *BOARD)


async def aask(reader: AsyncLeaderboardReader, method: str, args: tuple[Any, ...]) -> Any:
    if method == "count":
        return await reader.count(*BOARD)
    if method == "top":
        return await reader.top(*BOARD, limit=args[0], offset=args[1])
    if method == "around":
        return await reader.around(args[0], *BOARD, n=args[1])
    return await getattr(reader, method)(args[0], *BOARD)


def edges(single: LeaderboardReader, sharded: LeaderboardReader) -> None:
    """The top user, the last user, n larger than the board, whole-board pages."""
    everyone = single.top(*BOARD, limit=1000) + single.top(*BOARD, limit=1000, offset=1000)
    assert len(everyone) == single.count(*BOARD) == USERS
    first, last = everyone[0].user, everyone[-1].user
    for user in (first, last):
        assert sharded.around(user, *BOARD, n=50) == single.around(user, *BOARD, n=50)
    assert sharded.around(first, *BOARD, n=3) == everyone[:4]
    assert sharded.around(last, *BOARD, n=3) == everyone[-4:]
    tiny = ("Game", "daily", DAY)  # a board of two users, on two shards or one
    assert sharded.around("u1", *tiny, n=50) == single.around("u1", *tiny, n=50)
    assert len(single.around("u1", *tiny, n=50)) == 2


def check_same(client: Any, settings: Settings, single_keys: KeySpace) -> None:
    """The sharded reader of `settings` answers as an unsharded one of the same events."""
    single_key = single_keys.leaderboard("work", DAY)
    users = fill(client, settings, single_key)
    tied = [u for u, score in totals().items() if score == 1500.0]
    per_shard = [sum(1 for u in tied if shard_of(u, SHARDS) == i) for i in range(SHARDS)]
    assert min(per_shard) > TIE_PAGE  # ties past the first page are searched
    for user in ("u1", "\u00e91"):  # a two-user board for the edges
        shard = settings.shard_keys(shard_of(user, SHARDS)).leaderboard("Game", DAY)
        client.zincrby(shard, 5.0, user)
        client.zincrby(single_keys.leaderboard("Game", DAY), 5.0, user)
    single = LeaderboardReader(client, single_keys, settings.timezone)
    sharded = LeaderboardReader.from_settings(settings)
    asked = queries(users)
    try:
        expected = [ask(single, m, a) for m, a in asked]
        assert [ask(sharded, m, a) for m, a in asked] == expected
        edges(single, sharded)
    finally:
        sharded.close()

    async def run_async() -> list[Any]:
        async with AsyncLeaderboardReader.from_settings(settings) as areader:
            return [await aask(areader, m, a) for m, a in asked]

    assert asyncio.run(run_async()) == expected


def test_sharded_reads_equal_one_sorted_set(redis_url: str, settings: Settings) -> None:
    s = dataclasses.replace(settings, shards=SHARDS)
    client = redis.Redis.from_url(redis_url)
    check_same(client, s, KeySpace(leaderboard_prefix="single"))
    # the shard keys are the settings' (and so the consumer's)
    assert {k.decode() for k in client.scan_iter("*leaderboard:work:*")} == {
        s.shard_keys(i).leaderboard("work", DAY) for i in range(SHARDS)
    }
    client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


def test_sharded_reads_on_a_cluster(cluster: list[EmbeddedRedis], settings: Settings) -> None:
    """The shards' keys on all three nodes; the unsharded key under the hash tag."""
    s = dataclasses.replace(cluster_settings(settings, cluster, "rd"), shards=SHARDS)
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    slots = {key_slot(s.shard_keys(i).leaderboard("work", DAY).encode()) for i in range(SHARDS)}
    nodes = {client.get_node_from_key(s.shard_keys(i).leaderboard("work", DAY)).port
             for i in range(SHARDS)}  # fmt: skip
    assert len(slots) == SHARDS and len(nodes) == 3
    check_same(client, s, dataclasses.replace(s.keys, leaderboard_prefix="single"))
    client.close()


def test_sharded_errors_are_ours(settings: Settings) -> None:
    port = free_port()  # nothing listens there
    reader = LeaderboardReader(
        redis.Redis("127.0.0.1", port, socket_connect_timeout=1, retry=no_retry()), shards=SHARDS
    )
    with reader:
        for query in (
            lambda: reader.top(*BOARD),
            lambda: reader.rank("u1", *BOARD),
            lambda: reader.ranks(["u1", "u2"], *BOARD),
            lambda: reader.around("u1", *BOARD),
            lambda: reader.count(*BOARD),
        ):
            with pytest.raises(BackendUnavailable, match=str(port)):
                query()
        with pytest.raises(QueryError, match="offset \\+ limit"):
            reader.top(*BOARD, limit=10, offset=MAX_SHARDED_DEPTH)
        with pytest.raises(QueryError):
            reader.around("u1", "", "daily")
        with pytest.raises(QueryError):
            reader.ranks(["u1"], "work", "yearly")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LeaderboardReader(redis.Redis(), shards=0)


async def test_async_sharded_errors_are_ours() -> None:
    port = free_port()
    client = aioredis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=1, retry=no_async_retry()
    )
    async with AsyncLeaderboardReader(client, shards=SHARDS) as reader:
        with pytest.raises(BackendUnavailable):
            await reader.around("u1", *BOARD)


def test_cli_and_http_hide_the_shards(redis_url: str, settings: Settings) -> None:
    s = dataclasses.replace(settings, shards=SHARDS)
    client = redis.Redis.from_url(redis_url)
    single_keys = KeySpace(leaderboard_prefix="single")
    fill(client, s, single_keys.leaderboard("work", DAY))
    with LeaderboardReader(client, single_keys) as single:
        expected = [(r.rank, r.user, r.score) for r in single.top(*BOARD, limit=5)]
    env = {"POMOCORE_REDIS_URL": redis_url, "POMOCORE_SHARDS": str(SHARDS)}
    out = run_cli("leaderboard", "top", "--category", "work", "--period", "daily",
                  "--date", DAY, "--limit", "5", "--json", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["rank"], r["user"], r["score"]) for r in rows] == expected
    rank, user, score = expected[-1]
    out = run_cli("leaderboard", "rank", "--user", user, "--category", "work",
                  "--period", "daily", "--date", DAY, "--json", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"rank": rank, "user": user, "score": score}

    server = LeaderboardHTTPServer(LeaderboardReader.from_settings(s), free_port()).start()
    base = f"http://127.0.0.1:{server.port}/v1/leaderboard?"
    board = f"category=work&period=daily&date={DAY}"
    try:
        status, body = http_get(base.replace("?", f"/top?{board}&limit=5"))
        doc = json.loads(body)
        assert status == 200
        assert [(r["rank"], r["user"], r["score"]) for r in doc["rows"]] == expected
        assert doc["key"] == s.keys.leaderboard("work", DAY)  # the contract's name
        status, body = http_get(base.replace("?", f"/around?{board}&user={quote(user)}&n=1"))
        assert [r["rank"] for r in json.loads(body)["rows"]] == [rank - 1, rank, rank + 1]
        status, body = http_get(base.replace("?", f"/count?{board}"))
        assert (status, json.loads(body)["count"]) == (200, USERS)
        status, body = http_get(base.replace("?", f"/top?{board}&offset={MAX_SHARDED_DEPTH}"))
        assert status == 400 and "offset + limit" in json.loads(body)["error"]
    finally:
        server.close()
        server.reader.close()
