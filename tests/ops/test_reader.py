"""The reader library on real servers, on both of its paths: Valkey (ZREVRANK ... WITHSCORE,
one command) and Redis 7.0 (`redis-server` from PATH, when there is one: no WITHSCORE, a
pipeline of ZREVRANK and ZSCORE). Same answers on both; errors are ours; the `reader`
ACL user is enough; the readers are context managers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

import pomocore
from pomocore import acl
from pomocore.core.connect import no_async_retry, no_retry
from pomocore.core.errors import BackendError, BackendUnavailable
from pomocore.core.keys import KeySpace
from pomocore.embedded import free_port
from pomocore.reader import (
    MAX_AROUND,
    MAX_USERS,
    AsyncLeaderboardReader,
    LeaderboardReader,
    QueryError,
    Row,
)
from tests.support.servers import PathRedis, redis_70_binary, running
from tests.support.waiting import wait_for

DAY = "2026-02-12"
KEYS = KeySpace()
KEY = KEYS.leaderboard("work", DAY)
# 30 users: u00 has the highest score (300), u29 the lowest (10)
SCORES = {f"u{i:02d}": float(300 - 10 * i) for i in range(30)}


@pytest.fixture(scope="module")
def redis_70(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = redis_70_binary()
    if binary is None:
        pytest.skip("no redis-server older than 7.2 on PATH (the no-WITHSCORE path)")
    with running(PathRedis(binary, tmp_path_factory.mktemp("redis70"))) as server:
        yield server.url


@pytest.fixture(params=["valkey", "redis-7.0"])
def board_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """A server holding the board KEY; the parameter names the server."""
    url: str = redis_url if request.param == "valkey" else request.getfixturevalue("redis_70")
    client = redis.Redis.from_url(url)
    client.flushall()  # our own server, started by this session
    client.zadd(KEY, SCORES)
    client.close()
    return url


def expected_rows(first: int, last: int) -> list[Row]:
    """Rows of ranks first..last (1-based) of SCORES."""
    users = sorted(SCORES, key=lambda u: -SCORES[u])
    return [Row(r, users[r - 1], SCORES[users[r - 1]]) for r in range(first, last + 1)]


def check_answers(answers: dict[str, Any]) -> None:
    assert answers["top"] == expected_rows(1, 3)
    assert answers["rank"] == Row(5, "u04", 260.0)
    assert answers["missing"] is None
    assert answers["ranks"] == {"u10": Row(11, "u10", 200.0), "nobody": None,
                                "u00": Row(1, "u00", 300.0)}  # fmt: skip
    assert answers["around"] == expected_rows(8, 12)
    assert answers["around_top"] == expected_rows(1, 3)
    assert answers["around_bottom"] == expected_rows(27, 30)  # u28 is 29th
    assert answers["around_zero"] == [Row(30, "u29", 10.0)]
    assert answers["around_missing"] == []
    assert answers["count"] == 30 and answers["count_empty"] == 0


def test_sync_reader(board_url: str, request: pytest.FixtureRequest) -> None:
    with LeaderboardReader(redis.Redis.from_url(board_url)) as reader:
        answers = {
            "top": reader.top("work", "daily", DAY, limit=3),
            "rank": reader.rank("u04", "work", "daily", DAY),
            "missing": reader.rank("nobody", "work", "daily", DAY),
            "ranks": reader.ranks(["u10", "nobody", "u00", "u10"], "work", "daily", DAY),
            "around": reader.around("u09", "work", "daily", DAY, n=2),
            "around_top": reader.around("u00", "work", "daily", DAY, n=2),
            "around_bottom": reader.around("u28", "work", "daily", date(2026, 2, 12), n=2),
            "around_zero": reader.around("u29", "work", "daily", DAY, n=0),
            "around_missing": reader.around("nobody", "work", "daily", DAY),
            "count": reader.count("work", "daily", DAY),
            "count_empty": reader.count("work", "daily", "2026-02-13"),
        }
        check_answers(answers)
        # found out once: WITHSCORE on Valkey, the pipeline on Redis 7.0
        assert reader._withscore is ("valkey" in request.node.callspec.id)
        assert reader.ranks(["u01"], "work", "weekly", DAY) == {"u01": None}  # another key


async def test_async_reader(board_url: str, request: pytest.FixtureRequest) -> None:
    async with AsyncLeaderboardReader(aioredis.Redis.from_url(board_url)) as reader:
        # ranks first: it finds out about WITHSCORE itself
        ranks = await reader.ranks(["u10", "nobody", "u00", "u10"], "work", "daily", DAY)
        answers = {
            "top": await reader.top("work", "daily", DAY, limit=3),
            "rank": await reader.rank("u04", "work", "daily", DAY),
            "missing": await reader.rank("nobody", "work", "daily", DAY),
            "ranks": ranks,
            "around": await reader.around("u09", "work", "daily", DAY, n=2),
            "around_top": await reader.around("u00", "work", "daily", DAY, n=2),
            "around_bottom": await reader.around("u28", "work", "daily", DAY, n=2),
            "around_zero": await reader.around("u29", "work", "daily", DAY, n=0),
            "around_missing": await reader.around("nobody", "work", "daily", DAY),
            "count": await reader.count("work", "daily", DAY),
            "count_empty": await reader.count("work", "daily", "2026-02-13"),
        }
        check_answers(answers)
        assert reader._withscore is ("valkey" in request.node.callspec.id)


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_rank_is_one_command_where_the_server_has_withscore(board_url: str) -> None:
    admin = redis.Redis.from_url(board_url)
    with LeaderboardReader(redis.Redis.from_url(board_url)) as reader:
        reader.rank("u01", "work", "daily", DAY)  # finds out
        before = _calls(admin)
        reader.rank("u02", "work", "daily", DAY)
        reader.ranks(["u03", "u04"], "work", "daily", DAY)
        after = _calls(admin)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("zrevrank", "zscore")}
    if reader._withscore:
        assert delta == {"zrevrank": 3, "zscore": 0}
    else:
        assert delta == {"zrevrank": 3, "zscore": 3}
    admin.close()


def test_bad_queries_are_query_errors(redis_url: str) -> None:
    with LeaderboardReader(redis.Redis.from_url(redis_url)) as reader:
        bad = [
            lambda: reader.top("work", "yearly", DAY),  # type: ignore[arg-type]
            lambda: reader.top("work", "daily", "12/02/2026"),
            lambda: reader.top("work", "daily", "2026-02-30"),
            lambda: reader.top("work", "daily", DAY, limit=0),
            lambda: reader.top("work", "daily", DAY, limit=1001),
            lambda: reader.top("work", "daily", DAY, offset=-1),
            lambda: reader.top("", "daily", DAY),
            lambda: reader.rank("", "work", "daily", DAY),
            lambda: reader.around("u1", "work", "daily", DAY, n=MAX_AROUND + 1),
            lambda: reader.around("u1", "work", "daily", DAY, n=-1),
            lambda: reader.ranks([], "work", "daily", DAY),
            lambda: reader.ranks("u1", "work", "daily", DAY),
            lambda: reader.ranks([f"u{i}" for i in range(MAX_USERS + 1)], "work", "daily", DAY),
        ]
        for query in bad:
            with pytest.raises(QueryError):
                query()
    assert issubclass(QueryError, pomocore.PomocoreError) and issubclass(QueryError, ValueError)


async def test_redis_failures_are_our_errors(redis_url: str) -> None:
    port = free_port()  # nothing listens there
    with LeaderboardReader(
        redis.Redis("127.0.0.1", port, socket_connect_timeout=1, retry=no_retry())
    ) as reader:
        for query in (
            lambda: reader.top("work", "daily"),
            lambda: reader.rank("u1", "work", "daily"),
            lambda: reader.ranks(["u1", "u2"], "work", "daily"),
            lambda: reader.around("u1", "work", "daily"),
            lambda: reader.count("work", "daily"),
        ):
            with pytest.raises(BackendUnavailable, match=str(port)):
                query()
    async with AsyncLeaderboardReader(
        aioredis.Redis(
            host="127.0.0.1", port=port, socket_connect_timeout=1, retry=no_async_retry()
        )
    ) as ar:
        with pytest.raises(BackendUnavailable):
            await ar.rank("u1", "work", "daily")
    client = redis.Redis.from_url(redis_url)
    client.set(KEY, "a string")
    with LeaderboardReader(redis.Redis.from_url(redis_url)) as reader:
        for query in (
            lambda: reader.top("work", "daily", DAY),
            lambda: reader.rank("u1", "work", "daily", DAY),
            lambda: reader.count("work", "daily", DAY),
        ):
            with pytest.raises(BackendError) as info:  # WRONGTYPE: not a passing fault
                query()
            assert not isinstance(info.value, BackendUnavailable)
    client.close()


def test_leaving_the_block_closes_the_connections(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)

    def named() -> int:
        return sum(1 for c in admin.client_list() if c.get("name") == "reader-under-test")

    with LeaderboardReader(
        redis.Redis.from_url(redis_url, client_name="reader-under-test")
    ) as reader:
        reader.top("work", "daily")
        assert named() == 1
    # The server drops a closed connection from CLIENT LIST on its own time (a CI run on
    # the floor versions saw it still listed right after the block).
    wait_for(lambda: named() == 0, 5, "the reader's connection is still open")
    admin.close()


def test_the_reader_acl_user_is_enough(board_url: str, request: pytest.FixtureRequest) -> None:
    admin = redis.Redis.from_url(board_url)
    args = acl.setuser_args(KEYS, "reader", "pw", name="t-reader")
    if "redis-7.0" in request.node.callspec.id:
        args.remove("+client|setinfo")  # a 7.2 command: Redis 7.0 refuses the rule
    admin.execute_command("ACL", "SETUSER", *args)  # type: ignore[no-untyped-call]
    client = redis.Redis.from_url(board_url, username="t-reader", password="pw")
    try:
        with LeaderboardReader(client) as reader:
            assert reader.rank("u04", "work", "daily", DAY) == Row(5, "u04", 260.0)
            assert reader.ranks(["u00", "x"], "work", "daily", DAY)["u00"] == Row(1, "u00", 300.0)
            assert reader.around("u00", "work", "daily", DAY, n=1) == expected_rows(1, 2)
            assert reader.count("work", "daily", DAY) == 30
            assert reader.top("work", "daily", DAY, limit=1) == expected_rows(1, 1)
    finally:
        admin.execute_command("ACL", "DELUSER", "t-reader")  # type: ignore[no-untyped-call]
        admin.close()
