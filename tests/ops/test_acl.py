"""Least privilege: the generated ACL users on a real Valkey with an ACL file, and the real
pipeline running as the `worker` user."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from pomocore import acl
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from pomocore.reader import LeaderboardReader
from tests.support.consumer import drain
from tests.support.servers import running
from tests.support.streams import now_fields

PASSWORDS = {"producer": "prod-pw", "worker": "work-pw", "reader": "read-pw"}
ADMIN_PW = "admin-pw"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    directory = tmp_path_factory.mktemp("acl")
    keys = Settings.from_env({}).keys
    text = acl.acl_file(keys, PASSWORDS)
    text += f"user default on {acl.password_rule(ADMIN_PW)} ~* &* +@all\n"
    (directory / "users.acl").write_text(text)
    acl_args = ["--aclfile", str(directory / "users.acl")]
    with running(EmbeddedRedis(directory, extra_args=acl_args)) as server:
        yield server


def url(server: EmbeddedRedis, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def client(server: EmbeddedRedis, role: str) -> redis.Redis:
    return redis.Redis.from_url(url(server, role, PASSWORDS[role]))


def test_acl_file_is_loaded(acl_server: EmbeddedRedis) -> None:
    admin = redis.Redis.from_url(url(acl_server, "default", ADMIN_PW))
    users = {u if isinstance(u, str) else u.decode() for u in admin.acl_users()}
    admin.close()
    assert {"producer", "worker", "reader", "default"} <= users


@pytest.mark.parametrize("mode", ["exact", "derived"])
def test_pipeline_runs_as_worker(
    acl_server: EmbeddedRedis, settings: Settings, tmp_path: Path, mode: str
) -> None:
    admin = redis.Redis.from_url(url(acl_server, "default", ADMIN_PW))
    admin.flushall()
    producer = client(acl_server, "producer")
    stream = settings.keys.stream_key
    for i in range(50):
        producer.xadd(stream, now_fields(f"u{i % 5}", "Code", 60.0, isEnd="true", session=1))  # type: ignore[arg-type]
    producer.xadd(stream, {"userId": "bad", "duration": "-1"})
    producer.close()
    worker_settings = dataclasses.replace(
        settings,
        redis_url=url(acl_server, "worker", PASSWORDS["worker"]),
        leaderboard_mode=mode,
        derived_refresh_s=0.1,
    )

    import asyncio

    stats = asyncio.run(drain(worker_settings, timeout_s=30))
    if mode == "derived":  # the refresher, as worker, rebuilds the weekly key
        from pomocore.sinks.derived import DerivedRefresher

        async def refresh() -> int | None:
            worker = aioredis.Redis.from_url(worker_settings.redis_url)
            try:
                return await DerivedRefresher(worker, settings.keys, 1.0).refresh_once()
            finally:
                await worker.aclose()

        admin.sadd(settings.keys.derived_stale_key, *admin.keys("leaderboard:*-*-*"))
        assert asyncio.run(refresh()) == 4  # the week and month of Development and of work

    assert stats.committed == 51
    assert admin.xlen(settings.keys.dead_letter_key) == 1
    assert admin.xlen(settings.keys.session_score_key) == 50
    reader = LeaderboardReader(client(acl_server, "reader"), settings.keys, settings.timezone)
    top = reader.top("Development", "daily", None, limit=10)
    reader.close()
    assert len(top) == 5 and all(r.score == 600.0 for r in top)
    reader = LeaderboardReader(client(acl_server, "reader"), settings.keys, settings.timezone)
    weekly = reader.top("work", "weekly", None, limit=10)
    reader.close()
    assert len(weekly) == 5 and all(r.score == 600.0 for r in weekly)
    groups = admin.xinfo_groups(stream)
    assert groups[0]["pending"] == 0
    admin.close()


def test_what_each_role_cannot_do(acl_server: EmbeddedRedis, settings: Settings) -> None:
    admin = redis.Redis.from_url(url(acl_server, "default", ADMIN_PW))
    admin.set("other:key", "x")
    admin.zadd("leaderboard:work:2026-01-01", {"u": 1.0})
    stream = settings.keys.stream_key
    admin.xadd(stream, {"userId": "x"})

    worker = client(acl_server, "worker")
    for denied in (
        lambda: worker.flushall(),
        lambda: worker.get("other:key"),
        lambda: worker.set("other:key", "y"),
        lambda: worker.keys("*"),
        lambda: worker.config_get("*"),
        lambda: worker.zadd("not-a-leaderboard", {"u": 1}),
        lambda: worker.eval("return redis.call('GET', KEYS[1])", 1, "other:key"),
        lambda: worker.publish("some-other-channel", "x"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    assert worker.zincrby("leaderboard:work:2026-01-01", 1.0, "u") == 2.0
    assert worker.incr("pomocore:lost_to_trim") >= 1
    worker.close()

    reader = client(acl_server, "reader")
    assert reader.zrevrange("leaderboard:work:2026-01-01", 0, -1) == [b"u"]
    for denied in (
        lambda: reader.zincrby("leaderboard:work:2026-01-01", 5.0, "u"),
        lambda: reader.zadd("leaderboard:work:2026-01-01", {"v": 1}),
        lambda: reader.delete("leaderboard:work:2026-01-01"),
        lambda: reader.xrange(stream),
        lambda: reader.get("other:key"),
        lambda: reader.flushall(),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    reader.close()

    producer = client(acl_server, "producer")
    assert producer.xadd(stream, {"userId": "y", "ts": str(time.time())})
    for denied in (
        lambda: producer.xadd("another_stream", {"a": "b"}),
        lambda: producer.xrange(stream),
        lambda: producer.xreadgroup(settings.group, "c", {stream: ">"}),
        lambda: producer.zrevrange("leaderboard:work:2026-01-01", 0, -1),
        lambda: producer.delete(stream),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            denied()
    producer.close()
    admin.close()


def test_rules_follow_the_key_space() -> None:
    keys = Settings.from_env({}, key_hash_tag="pc", stream="in*put").keys
    worker = acl.rules(keys, "worker")
    assert "~{pc}in\\*put" in worker
    assert "~{pc}leaderboard:*" in worker and "~{pc}pomocore:*" in worker
    assert acl.rules(keys, "reader")[-1] == "%R~{pc}leaderboard:*"
    assert "+flushall" not in " ".join(worker) and "+@all" not in worker
    assert "+cluster|slots" in acl.rules(keys, "worker", cluster=True)
    with pytest.raises(ValueError):
        acl.rules(keys, "admin")
