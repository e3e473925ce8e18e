"""Redis answering with errors for a while (a failover, a replica without its primary, a
long script, OOM, a restart that loads its data): `pomocore run` holds its batches, says
it is not ready, and goes on when the server recovers, with every event counted once.
Real servers, real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from pomocore.consumers.app import run_until_stopped, runtime
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedCluster, EmbeddedRedis, free_port
from tests.support.expected import assert_exact, seconds_by_user
from tests.support.fault_proxy import FaultProxy
from tests.support.http_client import http_get
from tests.support.processes import ConsumerProcess, server_env, spawn_consumer
from tests.support.redis_faults import (
    busy_window,
    fail_over,
    fill_for_slow_load,
    master_down_window,
    oom_window,
    read_only_window,
    restart_loading,
)
from tests.support.servers import cluster_settings, running, with_servers
from tests.support.streams import (
    connected_group_state,
    dead_letters,
    group_state,
    is_drained,
    now_fields,
    publish,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

CONSUMER_ENV = {
    "POMOCORE_BATCH_SIZE": "50",
    "POMOCORE_BLOCK_MS": "100",
    "POMOCORE_LINGER_MS": "0",
    "POMOCORE_LOG_FORMAT": "text",
    "POMOCORE_SHUTDOWN_TIMEOUT_S": "30",
}


def _events(n: int, offset: int = 0) -> list[dict[str, str | bytes]]:
    apps = ["Code", "Slack", "Figma", "Spotify", "Google Chrome"]
    return [
        now_fields(f"u{(i + offset) % 13}", apps[i % 5], 2.0 + (i % 17) * 0.5)
        for i in range(n)
    ]


@pytest.fixture
def replica() -> Iterator[EmbeddedRedis]:
    with running(EmbeddedRedis()) as server:
        yield server


def readyz(port: int) -> tuple[int, dict[str, str]]:
    """/readyz's status and checks; (0, {}) while nothing listens yet."""
    try:
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    except OSError:
        return 0, {}
    return status, json.loads(body)["checks"]


def _consumer(
    settings: Settings, port: int, log: Path, extra: dict[str, str] | None = None
) -> ConsumerProcess:
    env = {**server_env(settings), **CONSUMER_ENV, "POMOCORE_METRICS_PORT": str(port)}
    return spawn_consumer({**env, **(extra or {})}, log=log)


def _waits_out_the_fault(consumer: ConsumerProcess, port: int) -> None:
    """The consumer is alive and says what it waits out (/readyz 503, "consumer")."""

    def says_so() -> bool:
        assert consumer.poll() is None, consumer.output()[-3000:]
        status, checks = readyz(port)
        return status == 503 and checks.get("consumer", "ok").startswith("error: waiting out")

    wait_for(says_so, 30, lambda: f"not reported: {readyz(port)}\n{consumer.output()[-2000:]}")


def _stays_up(consumer: ConsumerProcess, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert consumer.poll() is None, consumer.output()[-3000:]
        time.sleep(0.1)


def _recovers(consumer: ConsumerProcess, settings: Settings, port: int) -> None:
    wait_for(
        lambda: is_drained(settings),
        120,
        lambda: f"not drained: {group_state(settings)}\n{consumer.output()[-3000:]}",
        poll_s=0.1,
    )
    wait_for(lambda: readyz(port)[0] == 200, 30, lambda: f"not ready again: {readyz(port)}")
    assert consumer.stop() == 0, consumer.output()[-3000:]


Window = Callable[[EmbeddedRedis, EmbeddedRedis], contextlib.AbstractContextManager[None]]
WINDOWS: dict[str, Window] = {
    "READONLY": read_only_window,
    "MASTERDOWN": lambda server, _: master_down_window(server),
    "BUSY": lambda server, _: busy_window(server, seconds=3),
    "OOM": lambda server, _: oom_window(server),
}
# Under OOM a running consumer has nothing to wait out: it reads (XREADGROUP, XCLAIM and
# XAUTOCLAIM are not refused under OOM), and its commit script's first write is XACK,
# which is not refused either; a script that has written runs to its end, so the
# ZINCRBYs that follow are applied. It must simply keep going, exactly.
NOT_REPORTED = {"OOM"}
OOM_WINDOW_S = 3.0


@pytest.mark.parametrize("fault", list(WINDOWS))
def test_a_running_consumer_waits_out(
    fault: str,
    settings: Settings,
    own_redis: EmbeddedRedis,
    replica: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    """The window opens while batches are in flight (commit script, XCLAIM) and lanes
    block in XREADGROUP: both used to end the process at the first error."""
    s = with_servers(settings, redis_url=own_redis.url, mongo_uri=settings.mongo_uri)
    port = free_port()
    first, second = _events(300), _events(3000, offset=5)
    publish(s.redis_url, s.keys.stream_key, first)
    with _consumer(s, port, tmp_path / "run.log") as consumer:
        wait_for(lambda: is_drained(s), 60, lambda: consumer.output()[-3000:])
        publish(s.redis_url, s.keys.stream_key, second)  # busy when the window opens
        with WINDOWS[fault](own_redis, replica):
            if fault in NOT_REPORTED:
                _stays_up(consumer, OOM_WINDOW_S)
            else:
                _waits_out_the_fault(consumer, port)
        _recovers(consumer, s, port)
    assert_exact(s, first + second)
    assert dead_letters(s) == []


FILLER_KEYS = 40_000  # ~8 s of loading under SLOW_LOAD (tests/support/redis_faults.py)


def test_a_running_consumer_waits_out_a_restart_that_loads(
    settings: Settings, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Redis is killed mid-batch and restarts with an AOF that takes seconds to replay,
    answering -LOADING meanwhile (redis-py: BusyLoadingError, a ConnectionError): the
    consumer stays up, is not ready while the server loads, then drains exactly."""
    s = with_servers(settings, redis_url=own_redis.url, mongo_uri=settings.mongo_uri)
    port = free_port()
    first, second = _events(300), _events(3000, offset=7)
    publish(s.redis_url, s.keys.stream_key, first)
    fill_for_slow_load(own_redis, FILLER_KEYS)
    with _consumer(s, port, tmp_path / "run.log") as consumer:
        wait_for(lambda: is_drained(s), 60, lambda: consumer.output()[-3000:])
        publish(s.redis_url, s.keys.stream_key, second)  # busy when Redis goes
        restart_loading(own_redis)
        answers = _while_loading(consumer, port, own_redis)
        _recovers(consumer, s, port)
        assert "BusyLoadingError" in consumer.output(), "the consumer never met LOADING"
    assert answers and all(status == 503 for status, _ in answers), answers
    assert any("loading the dataset" in str(checks) for _, checks in answers), answers
    assert_exact(s, first + second)
    assert dead_letters(s) == []


def _while_loading(
    consumer: ConsumerProcess, port: int, server: EmbeddedRedis
) -> list[tuple[int, dict[str, str]]]:
    """/readyz's answers while `server` loads; the consumer must stay up throughout."""
    answers = []
    while server.loading():
        assert consumer.poll() is None, consumer.output()[-3000:]
        answers.append(readyz(port))
        time.sleep(0.2)
    return answers


def test_a_consumer_starting_under_oom_waits_for_memory(
    settings: Settings, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Under OOM the group cannot be created (XGROUP CREATE ... MKSTREAM may grow memory):
    the consumer used to exit at start-up, so an orchestrator restarted it in a loop."""
    s = with_servers(settings, redis_url=own_redis.url, mongo_uri=settings.mongo_uri)
    port = free_port()
    events = _events(1000)
    publish(s.redis_url, s.keys.stream_key, events)
    with contextlib.ExitStack() as stack:
        with oom_window(own_redis):
            consumer = stack.enter_context(_consumer(s, port, tmp_path / "run.log"))
            _waits_out_the_fault(consumer, port)
            assert "OutOfMemoryError" in readyz(port)[1]["consumer"]
        _recovers(consumer, s, port)
    assert_exact(s, events)


def test_failover_behind_a_stable_name(
    settings: Settings, own_redis: EmbeddedRedis, replica: EmbeddedRedis, tmp_path: Path
) -> None:
    """The consumer knows Redis by a name (here a proxy) that a failover moves to the new
    primary. Its open connections still reach the old one, now a replica, which answers
    READONLY for ever: the consumer drops them and reconnects through the name."""
    proxy = FaultProxy(own_redis.port)
    proxy.start()
    try:
        name = f"redis://127.0.0.1:{proxy.port}/0"
        s = with_servers(settings, redis_url=name, mongo_uri=settings.mongo_uri)
        port = free_port()
        first, second = _events(300), _events(500, offset=3)
        publish(s.redis_url, s.keys.stream_key, first)
        with _consumer(s, port, tmp_path / "run.log") as consumer:
            wait_for(lambda: is_drained(s), 60, lambda: consumer.output()[-3000:])
            fail_over(own_redis, replica)
            proxy.retarget(replica.port)  # the name follows the new primary
            publish(s.redis_url, s.keys.stream_key, second)  # through the name: the new one
            _recovers(consumer, s, port)
        assert_exact(s, first + second)
        assert dead_letters(s) == []
    finally:
        proxy.close()


@contextlib.contextmanager
def _slots_unserved(cluster: EmbeddedCluster, key: str) -> Iterator[None]:
    """CLUSTERDOWN for the block: the node serving `key` gives up its slots (cluster_state
    fail, "CLUSTERDOWN Hash slot not served" to every command on them), then takes them
    back, with its data, as after an operator's mistake or a failover that loses coverage."""
    probe = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    slot = probe.keyslot(key)
    probe.close()
    i = next(i for i, (lo, hi) in enumerate(cluster.slot_ranges) if lo <= slot <= hi)
    node = redis.Redis(host="127.0.0.1", port=cluster.nodes[i].port)
    lo, hi = cluster.slot_ranges[i]
    node.execute_command("CLUSTER", "DELSLOTSRANGE", lo, hi)
    try:
        yield
    finally:
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        node.close()


def _xadd_all(client: RedisCluster, stream: str, events: list[dict[str, str | bytes]]) -> None:
    pipe = client.pipeline(transaction=False)
    for fields in events:
        pipe.xadd(stream, fields)
    pipe.execute()


def _work_board(client: RedisCluster, settings: Settings, at: float) -> dict[str, float]:
    label = PeriodCalculator(settings.timezone)(at).labels()[0]
    rows = client.zrange(settings.keys.leaderboard("work", label), 0, -1, withscores=True)
    return {m.decode(): s for m, s in rows}


def test_a_cluster_consumer_waits_out_clusterdown(settings: Settings, tmp_path: Path) -> None:
    """A Cluster client meets CLUSTERDOWN while lanes block in XREADGROUP and batches are
    in flight: it holds them, reports not-ready, and ends exact once the slots are served
    again (it used to be fatal, as every ResponseError was)."""
    with EmbeddedCluster(tmp_path / "cluster") as cluster:
        s = dataclasses.replace(
            cluster_settings(settings, cluster.nodes, "pomo"), sinks=("leaderboard",)
        )
        client = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        at = time.time() - 120
        events = [
            now_fields(f"u{i % 13}", "Code", 1.0 + i % 7, timestamp=at) for i in range(3300)
        ]
        port = free_port()
        env = {"POMOCORE_REDIS_CLUSTER": "1", "POMOCORE_KEY_HASH_TAG": "pomo",
               "POMOCORE_SINKS": "leaderboard"}  # fmt: skip
        drained = lambda: connected_group_state(s) == (0, 0)  # noqa: E731
        with _consumer(s, port, tmp_path / "run.log", env) as consumer:
            _xadd_all(client, s.keys.stream_key, events[:300])
            wait_for(drained, 60, lambda: consumer.output()[-3000:])
            _xadd_all(client, s.keys.stream_key, events[300:])  # busy when the window opens
            with _slots_unserved(cluster, s.keys.stream_key):
                _waits_out_the_fault(consumer, port)
                _stays_up(consumer, 2.0)
            wait_for(drained, 120, lambda: f"not drained\n{consumer.output()[-3000:]}")
            wait_for(lambda: readyz(port)[0] == 200, 30, lambda: f"not ready: {readyz(port)}")
            assert consumer.stop() == 0, consumer.output()[-3000:]
        assert _work_board(client, s, at) == pytest.approx(seconds_by_user(events))
        client.close()


async def test_a_fatal_redis_error_still_ends_the_consumer(settings: Settings) -> None:
    """WRONGTYPE cannot be waited out: the consumer ends with it, promptly, even when a
    background task does not end on cancellation (redis-py's pubsub read can swallow one:
    the consumer then hung after its lanes had failed, neither working nor exiting)."""
    client = redis.Redis.from_url(settings.redis_url)
    client.set(settings.keys.stream_key, "not a stream")
    client.close()

    async def stubborn(stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    async with runtime(settings) as rt:
        rt.background.append(stubborn)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await asyncio.wait_for(run_until_stopped(rt, asyncio.Event()), 30)
