"""Least privilege: the ACL users `pomocore acl` generates, loaded on a real Valkey; what
each role may and may not do; the real pipeline running as the `worker` user with every
feature on; the probes and the group sampler as the read-only `monitor` user."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
import redis.asyncio as aioredis

import pomocore
from pomocore import acl
from pomocore.consumers.trimming import StreamTrimmer
from pomocore.core.keys import ROUTE_GROUP
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis, free_port
from pomocore.health import check_command
from pomocore.metrics import GroupSampler
from pomocore.reader import LeaderboardReader
from pomocore.sinks.derived import DerivedRefresher
from tests.support.consumer import drain
from tests.support.fake_llm import FakeLLM
from tests.support.http_client import metric_value, scrape_metrics
from tests.support.processes import run_cli, server_env, spawn_consumer, spawn_pomocore
from tests.support.servers import running
from tests.support.streams import now_fields
from tests.support.waiting import wait_for

PASSWORDS = {"producer": "prod-pw", "worker": "work-pw", "reader": "read-pw", "monitor": "mon-pw"}
ADMIN_PW = "admin-pw"
LEADERBOARD = "leaderboard:work:2026-01-01"


def generated_acl_file(directory: Path, env: dict[str, str] | None = None) -> str:
    """What `pomocore acl` prints for every role, as an operator runs it."""
    args = ["acl"]
    for role, password in PASSWORDS.items():
        (directory / f"{role}.pw").write_text(password + "\n")
        args += ["--password-file", f"{role}={directory / f'{role}.pw'}"]
    done = run_cli(*args, env=env or {})
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    directory = tmp_path_factory.mktemp("acl")
    text = generated_acl_file(directory)
    assert set(re.findall(r"^user (\w+) ", text, re.M)) == set(acl.ROLES)
    text += f"user default on {acl.password_rule(ADMIN_PW)} ~* &* +@all\n"
    (directory / "users.acl").write_text(text)
    acl_args = ["--aclfile", str(directory / "users.acl")]
    with running(EmbeddedRedis(directory, extra_args=acl_args)) as server:
        yield server


def url(server: EmbeddedRedis, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def client(server: EmbeddedRedis, role: str) -> redis.Redis:
    return redis.Redis.from_url(url(server, role, PASSWORDS[role]))


@pytest.fixture
def admin(acl_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """The server's unrestricted user, on a flushed server with an empty ACL LOG."""
    c = redis.Redis.from_url(url(acl_server, "default", ADMIN_PW))
    c.flushall()
    c.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
    yield c
    c.close()


def as_role(settings: Settings, server: EmbeddedRedis, role: str, **changes: Any) -> Settings:
    return dataclasses.replace(settings, redis_url=url(server, role, PASSWORDS[role]), **changes)


def acl_denials(admin: redis.Redis) -> list[str]:
    """Every ACL denial the server logged since the fixture reset the log."""
    entries: list[dict[str, Any]] = admin.acl_log()  # type: ignore[assignment]
    return [f"{e.get('username')}: {e.get('reason')} {e.get('object')} ({e.get('context')})"
            for e in entries]  # fmt: skip


def test_acl_file_is_loaded(acl_server: EmbeddedRedis, admin: redis.Redis) -> None:
    users = {u if isinstance(u, str) else u.decode() for u in admin.acl_users()}
    assert {*acl.ROLES, "default"} <= users


@pytest.mark.parametrize("mode", ["exact", "derived"])
def test_pipeline_runs_as_worker(
    acl_server: EmbeddedRedis, admin: redis.Redis, settings: Settings, mode: str
) -> None:
    producer = client(acl_server, "producer")
    stream = settings.keys.stream_key
    for i in range(50):
        producer.xadd(stream, now_fields(f"u{i % 5}", "Code", 60.0, isEnd="true", session=1))  # type: ignore[arg-type]
    producer.xadd(stream, {"userId": "bad", "duration": "-1"})
    producer.close()
    worker_settings = as_role(
        settings, acl_server, "worker", leaderboard_mode=mode, derived_refresh_s=0.1
    )

    stats = asyncio.run(drain(worker_settings, timeout_s=30))
    if mode == "derived":  # the refresher, as worker, rebuilds the weekly key

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
    weekly = reader.top("work", "weekly", None, limit=10)
    reader.close()
    assert len(top) == 5 and all(r.score == 600.0 for r in top)
    assert len(weekly) == 5 and all(r.score == 600.0 for r in weekly)
    assert admin.xinfo_groups(stream)[0]["pending"] == 0
    assert acl_denials(admin) == []


def denied(call: Any) -> None:
    """`call()` is refused by the ACL (directly, or inside a script)."""
    with pytest.raises(redis.exceptions.ResponseError) as info:
        call()
    assert isinstance(info.value, redis.exceptions.NoPermissionError) or (
        "ACL failure" in str(info.value)
    ), info.value


def test_worker_may_do_its_work_and_no_more(
    acl_server: EmbeddedRedis, admin: redis.Redis, settings: Settings
) -> None:
    keys = settings.keys
    admin.set("other:key", "x")
    admin.zadd(LEADERBOARD, {"u": 1.0})
    admin.xadd(keys.stream_key, {"userId": "x"})
    worker = client(acl_server, "worker")
    # allowed: increments, expiry and derived rebuilds on leaderboards; its own keys
    assert worker.zincrby(LEADERBOARD, 1.0, "u") == 2.0
    assert worker.expireat(LEADERBOARD, int(time.time()) + 3600)
    assert worker.zunionstore("leaderboard:work:2026-W1", [LEADERBOARD]) == 1
    assert worker.incr("pomocore:lost_to_trim") == 1
    assert worker.delete("pomocore:lost_to_trim") == 1
    assert worker.xtrim(keys.stream_key, maxlen=10) == 0
    assert worker.xadd(keys.dead_letter_key, {"dlq.reason": "x"})
    assert worker.eval("return redis.call('ZINCRBY', KEYS[1], 1, 'u')", 2, LEADERBOARD,
                       keys.stream_key) == b"3"  # fmt: skip
    for call in (
        # leaderboards: no deletion, no trimming, no other write, directly or in a script
        lambda: worker.delete(LEADERBOARD),
        lambda: worker.unlink(LEADERBOARD),
        lambda: worker.xtrim(LEADERBOARD, maxlen=0),
        lambda: worker.xdel(LEADERBOARD, "1-1"),
        lambda: worker.zadd(LEADERBOARD, {"v": 1}),
        lambda: worker.zrem(LEADERBOARD, "u"),
        lambda: worker.expire(LEADERBOARD, 1),
        lambda: worker.eval("return redis.call('DEL', KEYS[1])", 1, LEADERBOARD),
        lambda: worker.eval("return redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)", 1, LEADERBOARD),
        # the streams: no deleting entries or the streams themselves
        lambda: worker.xdel(keys.stream_key, "1-1"),
        lambda: worker.delete(keys.stream_key),
        lambda: worker.delete(keys.dead_letter_key),
        # nothing outside its keys, no server administration
        lambda: worker.flushall(),
        lambda: worker.get("other:key"),
        lambda: worker.set("other:key", "y"),
        lambda: worker.keys("*"),
        lambda: worker.config_get("*"),
        lambda: worker.info("server"),
        lambda: worker.zadd("not-a-leaderboard", {"u": 1}),
        lambda: worker.eval("return redis.call('GET', KEYS[1])", 1, "other:key"),
        lambda: worker.publish("some-other-channel", "x"),
    ):
        denied(call)
    worker.close()
    assert admin.zscore(LEADERBOARD, "u") == 3.0 and admin.xlen(keys.stream_key) == 1


def test_reader_monitor_and_producer_denials(
    acl_server: EmbeddedRedis, admin: redis.Redis, settings: Settings
) -> None:
    keys = settings.keys
    stream = keys.stream_key
    admin.set("other:key", "x")
    admin.zadd(LEADERBOARD, {"u": 1.0})
    admin.xgroup_create(stream, settings.group, id="0", mkstream=True)
    admin.xadd(stream, {"userId": "x"})
    admin.xreadgroup(settings.group, "c", {stream: ">"})
    admin.set(keys.lost_to_trim_key, 3)

    reader = client(acl_server, "reader")
    assert reader.zrevrange(LEADERBOARD, 0, -1) == [b"u"]
    for call in (
        lambda: reader.zincrby(LEADERBOARD, 5.0, "u"),
        lambda: reader.zadd(LEADERBOARD, {"v": 1}),
        lambda: reader.delete(LEADERBOARD),
        lambda: reader.xrange(stream),
        lambda: reader.xlen(stream),
        lambda: reader.get("other:key"),
        lambda: reader.flushall(),
    ):
        denied(call)
    reader.close()

    monitor = client(acl_server, "monitor")
    # what KEDA's redis-streams scaler and the metrics sampler read
    assert monitor.xinfo_groups(stream)[0]["pending"] == 1
    assert monitor.xpending(stream, settings.group)["pending"] == 1
    assert monitor.xpending_range(stream, settings.group, "-", "+", 1)
    assert monitor.xlen(stream) == 1
    assert monitor.xlen(keys.dead_letter_key) == 0
    assert monitor.get(keys.lost_to_trim_key) == b"3"
    for call in (
        lambda: monitor.xadd(stream, {"a": "b"}),
        lambda: monitor.xack(stream, settings.group, "0-1"),
        lambda: monitor.xreadgroup(settings.group, "m", {stream: ">"}),
        lambda: monitor.xrange(stream),
        # XINFO STREAM shows entries: its first and last, and FULL every one (#14 §2)
        lambda: monitor.xinfo_stream(stream, full=True),
        lambda: monitor.xinfo_stream(stream),
        lambda: monitor.xtrim(stream, maxlen=0),
        lambda: monitor.xgroup_destroy(stream, settings.group),
        lambda: monitor.delete(stream),
        lambda: monitor.set(keys.lost_to_trim_key, 0),
        lambda: monitor.incr(keys.lost_to_trim_key),
        lambda: monitor.zrevrange(LEADERBOARD, 0, -1),
        lambda: monitor.zincrby(LEADERBOARD, 1.0, "u"),
        lambda: monitor.eval("return 1", 0),
        lambda: monitor.get("other:key"),
        lambda: monitor.flushall(),
        lambda: monitor.config_get("*"),
    ):
        denied(call)
    monitor.close()

    producer = client(acl_server, "producer")
    assert producer.xadd(stream, {"userId": "y", "ts": str(time.time())})
    for call in (
        lambda: producer.xadd("another_stream", {"a": "b"}),
        lambda: producer.xrange(stream),
        lambda: producer.xreadgroup(settings.group, "c", {stream: ">"}),
        lambda: producer.zrevrange(LEADERBOARD, 0, -1),
        lambda: producer.delete(stream),
    ):
        denied(call)
    producer.close()


async def test_trimming_and_caps_run_as_worker(
    acl_server: EmbeddedRedis, admin: redis.Redis, settings: Settings
) -> None:
    """Trimming decided whether XTRIM ... ACKED exists with INFO, which `worker` may not
    run: every pass failed with NOPERM and the stream grew without bound."""
    s = as_role(settings, acl_server, "worker", stream_maxlen=10, dead_letter_maxlen=5)
    keys = s.keys
    admin.xgroup_create(keys.stream_key, s.group, id="0", mkstream=True)
    pipe = admin.pipeline(transaction=False)
    for i in range(500):
        pipe.xadd(keys.stream_key, {"n": str(i)})
        pipe.xadd(keys.dead_letter_key, {"dlq.reason": str(i)})
    pipe.execute()
    admin.xreadgroup(s.group, "c", {keys.stream_key: ">"}, count=400)
    admin.xack(keys.stream_key, s.group, *[i for i, _ in admin.xrange(keys.stream_key, count=400)])  # type: ignore[union-attr]
    worker = aioredis.Redis.from_url(s.redis_url)
    try:
        trimmer = StreamTrimmer(s, worker)
        passes = await trimmer.pass_once()
    finally:
        await worker.aclose()
    assert [p.stream for p in passes] == ["input", "dead_letter", "session_score"]
    assert 100 <= admin.xlen(keys.stream_key) < 100 + 100  # the 100 undelivered stay
    assert admin.xlen(keys.dead_letter_key) < 5 + 100
    assert trimmer.dropped["input", "maxlen"] > 300 and trimmer.dropped["dead_letter", "maxlen"]
    assert acl_denials(admin) == []


def test_probes_and_sampler_run_as_monitor(
    acl_server: EmbeddedRedis, admin: redis.Redis, settings: Settings
) -> None:
    s = as_role(settings, acl_server, "monitor", leaderboard_mode="derived")
    keys = s.keys
    admin.xgroup_create(keys.stream_key, s.group, id="0", mkstream=True)
    admin.xadd(keys.stream_key, {"userId": "x"})
    admin.xreadgroup(s.group, "c", {keys.stream_key: ">"})
    sampler = GroupSampler(s)
    try:
        values = sampler.sample()
    finally:
        sampler.close()
    assert values["pomocore_group_pending"] == 1 and values["pomocore_stream_length"] == 1
    assert "pomocore_derived_stale_days" in values
    out = io.StringIO()
    assert check_command(s, out) == 0, out.getvalue()
    assert acl_denials(admin) == []


def test_acl_command_prints_the_roles_given_a_password(tmp_path: Path) -> None:
    (tmp_path / "w.pw").write_text("work-pw\n")
    done = run_cli("acl", "--password-file", f"worker={tmp_path / 'w.pw'}", env={})
    assert done.returncode == 0, done.stderr.decode()
    assert re.findall(r"^user (\w+) ", done.stdout.decode(), re.M) == ["worker"]
    done = run_cli("acl", "--users", "monitor", "--setuser", env={})
    assert done.returncode == 2 and b"--password-file monitor=PATH" in done.stderr


def test_rules_follow_the_key_space() -> None:
    keys = Settings.from_env({}, key_hash_tag="pc", stream="in*put").keys
    worker = acl.rules(keys, "worker")
    assert "~{pc}in\\*put" in worker
    # pomocore:* and leaderboard keys only inside selectors, each with its own commands
    assert "~{pc}leaderboard:*" not in worker and "~{pc}pomocore:*" not in worker
    assert "(~{pc}leaderboard:* +zincrby +expireat +type +zunionstore)" in worker
    (own,) = [r for r in worker if r.startswith("(~{pc}pomocore:* ")]
    assert "+del" in own.split() and "+get" in own.split()
    (scripts,) = [r for r in worker if "+evalsha" in r]
    assert "~{pc}leaderboard:*" in scripts and "~{pc}in\\*put" in scripts
    # DEL only ever with pomocore:* keys
    assert [r for r in worker if "+del" in r.split() or r == "+del"] == [own]
    assert acl.rules(keys, "reader")[-1] == "%R~{pc}leaderboard:*"
    assert "%R~{pc}in\\*put" in acl.rules(keys, "monitor")
    assert "+flushall" not in " ".join(worker) and "+@all" not in worker
    assert "+cluster|slots" in acl.rules(keys, "worker", cluster=True)
    assert "+cluster|slots" in acl.rules(keys, "monitor", cluster=True)
    line = acl.setuser_line(keys, "worker", "pw")
    assert '"(~{pc}leaderboard:* +zincrby +expireat +type +zunionstore)"' in line
    with pytest.raises(ValueError):
        acl.rules(keys, "admin")


def sharded_users(admin: redis.Redis, settings: Settings) -> Settings:
    """`producer6` and `worker6`: the producer and worker roles for POMOCORE_SHARDS=6, as
    `pomocore acl` prints them with that setting; `settings` with six shards."""
    s = dataclasses.replace(settings, shards=6)
    for role in ("producer", "worker"):
        args = acl.setuser_args(s.keys, role, f"{role}-6", name=f"{role}6", shards=6)
        admin.execute_command("ACL", "SETUSER", *args)  # type: ignore[no-untyped-call]
    return s


@pytest.mark.timeout(120)
def test_forwarder_runs_as_worker(
    acl_server: EmbeddedRedis, admin: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """`pomocore route` as the worker role of six shards: a crashed forwarder's batch
    claimed, waits for new entries, the contract stream trimmed, the lease handed over on
    SIGTERM; and the producer role XADDs to the contract stream and to any shard. No
    NOPERM anywhere."""
    s = sharded_users(admin, settings)
    stream = s.keys.stream_key
    producer = redis.Redis.from_url(url(acl_server, "producer6", "producer-6"))
    admin.xgroup_create(stream, ROUTE_GROUP, id="0", mkstream=True)
    for i in range(100):
        producer.xadd(stream, now_fields(f"u{i % 7}", "Code", 5.0))  # type: ignore[arg-type]
    admin.xreadgroup(ROUTE_GROUP, "crashed", {stream: ">"}, count=30)  # never acknowledged
    kit = [{"userId": f"k{i}", "app": "Code", "duration": 1.0, "timestamp": time.time() - 60}
           for i in range(20)]  # fmt: skip
    pomocore.publish_many(producer, kit, settings=s)  # straight to the shards
    env = {
        **server_env(settings),
        "POMOCORE_REDIS_URL": url(acl_server, "worker6", "worker-6"),
        "POMOCORE_SHARDS": "6",
        "POMOCORE_STREAM_MAXLEN": "50",
        "POMOCORE_BLOCK_MS": "100",
        "POMOCORE_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "route.log"

    def routed() -> bool:
        return all(g["lag"] == 0 and g["pending"] == 0 for g in admin.xinfo_groups(stream))

    with spawn_pomocore("route", env, log=log) as forwarder:
        wait_for(routed, timeout_s=30, describe=lambda: log.read_text()[-3000:])
        for i in range(100, 1100):
            producer.xadd(stream, now_fields(f"u{i % 7}", "Code", 5.0))  # type: ignore[arg-type]
        wait_for(routed, timeout_s=30, describe=lambda: log.read_text()[-3000:])
        wait_for(lambda: admin.xlen(stream) < 1100, timeout_s=10, describe="not trimmed")
        assert forwarder.stop() == 0, log.read_text()[-3000:]
    producer.close()
    output = log.read_text()
    assert not NOPERM.search(output), NOPERM.findall(output)[:5]
    assert acl_denials(admin) == []
    assert sum(admin.xlen(s.shard_keys(i).stream_key) for i in range(6)) == 1100 + 20
    assert admin.get(s.keys.route_lease_key) is None
    assert b"crashed" not in [c["name"] for c in admin.xinfo_consumers(stream, ROUTE_GROUP)]


def test_rules_with_shards_cover_every_shard() -> None:
    keys = Settings.from_env({}, key_hash_tag="pc").keys
    worker = acl.rules(keys, "worker", shards=4)
    assert "~{pc}pattern_match_stream" in worker
    assert "~{shard:*}pattern_match_stream" in worker
    (own,) = [r for r in worker if r.startswith("(~{pc}pomocore:* ")]
    assert "~{shard:*}pomocore:*" in own.split()
    boards = "(~{pc}leaderboard:* ~{shard:*}leaderboard:* +zincrby +expireat +type +zunionstore)"
    assert boards in worker
    assert acl.rules(keys, "producer", shards=4)[-2:] == [
        "~{pc}pattern_match_stream", "~{shard:*}pattern_match_stream"
    ]
    assert acl.rules(keys, "reader", shards=4)[-1] == "%R~{shard:*}leaderboard:*"
    assert "{shard:*}" not in " ".join(acl.rules(keys, "worker"))  # one shard: as before


# --- the whole pipeline as `worker`, every feature on ---

# What the run must have done, as its /metrics report it.
COUNTED: list[tuple[str, dict[str, str]]] = [
    ("pomocore_stream_trimmed_total", {"stream": "input"}),
    ("pomocore_stream_trimmed_total", {"stream": "dead_letter"}),
    ("pomocore_llm_keys_total", {"outcome": "queued"}),  # over the LLM budget
    ("pomocore_llm_learned_patterns_total", {}),
    ("pomocore_events_reclaimed_total", {}),
]
NOPERM = re.compile(r"NOPERM|NoPermission|No permissions|ACL failure", re.IGNORECASE)


def unknown_app_events(n_apps: int, users: int, per: int) -> list[dict[str, str | bytes]]:
    """Events of apps no pattern knows (the LLM decides them), from several users each,
    each user's titles their own (no key shared between users' requests)."""
    return [
        now_fields(f"u{u}", f"LedgerPro{a}", 30.0, title=f"book {u}-{k}")
        for k in range(per)
        for a in range(n_apps)
        for u in range(users)
    ]


@pytest.mark.timeout(240)
def test_whole_pipeline_as_worker_with_every_feature(
    acl_server: EmbeddedRedis, admin: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """`pomocore run` as `worker`, with trimming, derived mode, the LLM (budget, queue,
    learning, reclassifier), reclaim of a crashed consumer's entries, dead letters and
    their cap, session scores and /metrics: no NOPERM anywhere, and the stream is held
    near POMOCORE_STREAM_MAXLEN (the issue: it stayed at 20,000 with a bound of 1,000)."""
    maxlen = 1_000
    keys = settings.keys
    stream = keys.stream_key
    producer = client(acl_server, "producer")
    # a consumer that crashed holding 40 entries: reclaimed after POMOCORE_RECLAIM_IDLE_MS
    admin.xgroup_create(stream, settings.group, id="0", mkstream=True)
    for i in range(40):
        producer.xadd(stream, now_fields(f"r{i % 4}", "Code", 10.0))  # type: ignore[arg-type]
    admin.xreadgroup(settings.group, "crashed", {stream: ">"})
    metrics_port = free_port()
    env = {
        **server_env(settings),
        "POMOCORE_REDIS_URL": url(acl_server, "worker", PASSWORDS["worker"]),
        "POMOCORE_STREAM_MAXLEN": str(maxlen),
        "POMOCORE_LEADERBOARD_MODE": "derived",
        "POMOCORE_DERIVED_REFRESH_S": "0.5",
        "POMOCORE_RECLAIM_IDLE_MS": "2000",
        "POMOCORE_MONGO_TIMEOUT_MS": "1000",
        "POMOCORE_DEAD_LETTER_MAXLEN": "50",
        "POMOCORE_SESSION_SCORE_MAXLEN": "100000",
        "POMOCORE_LLM_API_KEY": "test",
        "POMOCORE_LLM_CALLS_PER_MIN": "2",  # fewer than the users' requests: some queue
        "POMOCORE_LLM_USER_SHARE": "1.0",
        "POMOCORE_LLM_LEARN_AFTER": "2",
        "POMOCORE_LLM_LEARN_MIN_USERS": "1",
        "POMOCORE_METRICS_PORT": str(metrics_port),
        "POMOCORE_BATCH_SIZE": "200",
        "POMOCORE_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "run.log"
    published = 40
    unneeded: list[int] = []  # entries before the first one the group needs, sampled
    with FakeLLM(rule=lambda item: "Finance") as llm:
        env["POMOCORE_LLM_BASE_URL"] = llm.url + "/v1"
        with spawn_consumer(env, log=log) as consumer:
            events = unknown_app_events(n_apps=6, users=8, per=2)
            events += [now_fields(f"s{i % 9}", "Code", 5.0, isEnd="true", session=i)
                       for i in range(300)]  # fmt: skip
            events += [{"userId": "bad", "duration": "x"} for _ in range(300)]
            events += [now_fields(f"b{i % 50}", "Code", 1.0) for i in range(20_000)]
            for start in range(0, len(events), 500):
                pipe = producer.pipeline(transaction=False)
                for fields in events[start : start + 500]:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                published += len(pipe.execute())
                unneeded.append(_unneeded(admin, settings))
                time.sleep(0.02)

            def drained() -> bool:
                unneeded.append(_unneeded(admin, settings))
                return _group_state(admin, settings) == (0, 0)

            wait_for(
                drained,
                timeout_s=120,
                describe=lambda: (
                    f"not drained: {_group_state(admin, settings)}\n" + log.read_text()[-3000:]
                ),
            )
            wait_for(lambda: admin.xlen(stream) <= maxlen + 100, timeout_s=20,
                     describe=lambda: f"XLEN {admin.xlen(stream)}")  # fmt: skip
            wait_for(lambda: admin.exists(keys.leaderboard("Finance", _this_week())) == 1,
                     timeout_s=20, describe="no derived weekly key")  # fmt: skip
            samples = scrape_metrics(metrics_port)

            def reported() -> bool:  # the process's counters are copied every 5 s
                m = scrape_metrics(metrics_port)
                return all(metric_value(m, name, **labels) > 0 for name, labels in COUNTED)

            wait_for(reported, timeout_s=20, describe="counters not reported")
            llm_keys = scrape_metrics(metrics_port)
            assert consumer.stop() == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert not NOPERM.search(output), NOPERM.findall(output)[:5]
    assert acl_denials(admin) == []
    # every feature did its work
    assert llm.calls >= 1
    assert admin.xlen(keys.dead_letter_key) <= 50 + 100
    assert admin.xlen(keys.session_score_key) == 300
    assert metric_value(samples, "pomocore_group_sample_up") == 1.0
    assert "reclaimed idle entries" in output
    assert admin.zscore(keys.leaderboard("work", _today()), "r0") == 100.0  # reclaimed
    for name, labels in COUNTED:
        assert metric_value(llm_keys, name, **labels) > 0, (name, labels)
    db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
    assert db.learned_pattern_review.count_documents({}) >= 1  # learned as worker
    assert db.pomodoro_usage_log.count_documents({}) == published - 300
    # the stream held near its bound while 20,000 entries went through: what it keeps
    # beyond what the group still needs is at most the bound, plus the headroom after
    # which commits wake the trimmer (10 % of the bound, at least 1,000 entries), plus
    # what the lanes commit meanwhile (4 x 200) and a stream node (100). Not at every
    # instant: when the group moves on (the reclaimed batch acknowledged), the entries
    # it held back become trimmable at once, and the next pass comes within 0.1 s.
    # (The trimmer of old never ran as worker: 20,000 and growing.)
    assert max(unneeded) > 0, unneeded  # (there were acknowledged entries to trim)
    ninetieth = sorted(unneeded)[int(len(unneeded) * 0.9)]
    assert ninetieth <= maxlen + 1_000 + 800 + 100, unneeded
    assert admin.xlen(stream) <= maxlen + 100


def _group_state(admin: redis.Redis, settings: Settings) -> tuple[int, int]:
    for g in admin.xinfo_groups(settings.keys.stream_key):
        if g["name"] == settings.group.encode():
            return int(g.get("lag") or 0), int(g["pending"])
    return -1, -1


# KEYS[1] stream; ARGV[1] group. {XLEN, entries from the first one the group still needs}
_NEEDED = """
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then
    local start = '(' .. info['last-delivered-id']
    local oldest = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
    if oldest then start = oldest end
    return {redis.call('XLEN', KEYS[1]), #redis.call('XRANGE', KEYS[1], start, '+')}
  end
end
return {redis.call('XLEN', KEYS[1]), 0}
"""


def _unneeded(admin: redis.Redis, settings: Settings) -> int:
    """Entries of the stream older than the first one the group still needs (its oldest
    pending entry, or the first not yet delivered): what trimming may remove."""
    xlen, needed = admin.eval(_NEEDED, 1, settings.keys.stream_key, settings.group)  # type: ignore[misc]
    return int(xlen) - int(needed)


def _today() -> str:
    return PeriodCalculator(Settings.from_env({}).timezone)(time.time() - 60).daily


def _this_week() -> str:
    return PeriodCalculator(Settings.from_env({}).timezone)(time.time() - 60).weekly
