"""The operations endpoints tell the truth on time: /healthz fails for a blocked event
loop or a stuck lane (it is answered by a thread of its own, so answering proves
nothing), and /metrics and /readyz answer within their bound while Redis hangs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from pomocore import metrics as pm
from pomocore.bounded import CallTimeout, SingleFlight
from pomocore.consumers.app import Runtime
from pomocore.core.decision import ClassKey, Decision
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis, free_port
from pomocore.health import PROBE_TIMEOUT_S, OpsServer, Probes
from pomocore.supervisor import startup_deadline_s
from tests.support.consumer import serving_consumer
from tests.support.expected import assert_exact
from tests.support.http_client import http_get
from tests.support.processes import server_env, spawn_consumer
from tests.support.servers import running, stalled, with_servers
from tests.support.streams import is_drained, now_fields, publish
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.timeout(180)

FREEZE_APP = "Freeze"  # the test classifier blocks the event loop on this app
UNKNOWN_APP = "Zzyzx Frobnicator"  # no pattern decides it: the batch asks the "LLM"
UP = "pomocore_group_sample_up"


class HealthWatch:
    """Polls /healthz from a thread of its own (the test's event loop may be the one that
    is blocked) and keeps every answer."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.seen: list[tuple[int, dict[str, Any]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.wait(0.1):
            status, body = http_get(self.url)
            self.seen.append((status, json.loads(body)))

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def overdue(self) -> list[dict[str, float]]:
        return [doc["overdue_s"] for status, doc in self.seen if status == 503]


class FreezingClassifier:
    """The runtime's classifier, but a batch with FREEZE_APP blocks the event loop."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def classify_many(self, keys: Sequence[ClassKey]) -> list[Decision]:
        if any(app == FREEZE_APP for app, _, _ in keys):
            time.sleep(self.seconds)  # a blocking call on the event loop
        decisions: list[Decision] = self.inner.classify_many(keys)
        return decisions


class HangingResolver:
    """An LLM resolver whose answer never comes and that has no timeout of its own."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def resolve(
        self, keys: Sequence[ClassKey], users: Mapping[ClassKey, Collection[str]] | None = None
    ) -> dict[ClassKey, Decision]:
        self.waiting += 1
        await self.release.wait()
        return {}


def _events(n: int) -> list[dict[str, str | bytes]]:
    return [now_fields(f"u{i % 5}", "Code", 3.0 + i) for i in range(n)]


async def test_a_blocked_event_loop_fails_liveness_until_it_turns_again(
    settings: Settings,
) -> None:
    s = dataclasses.replace(settings, liveness_timeout_s=1.0)
    events = [*_events(20), now_fields("u9", FREEZE_APP, 7.0), *_events(20)]

    def freeze(rt: Runtime) -> None:
        for lane in rt.lanes:
            lane.processor.classifier = FreezingClassifier(lane.processor.classifier, 4.0)

    async with serving_consumer(s, freeze) as (_, port):
        with HealthWatch(port) as watch:
            await wait_until(lambda: bool(watch.seen) and watch.seen[-1][0] == 200, 30)
            publish(s.redis_url, s.keys.stream_key, events)
            await wait_until(lambda: is_drained(s), 60)
            await wait_until(lambda: watch.seen[-1][0] == 200, 30)
    assert any("event loop" in late for late in watch.overdue()), watch.seen
    assert_exact(s, events)


async def test_a_lane_stuck_in_an_await_without_timeout_fails_liveness(
    settings: Settings,
) -> None:
    """The lane waits for an answer that never comes; the loop and the other lanes go on.
    Its allowance is one batch attempt's bound (two Redis command timeouts), then the
    limit; released, it finishes its batch and liveness recovers."""
    s = dataclasses.replace(settings, liveness_timeout_s=1.0)
    hang = HangingResolver()

    def stick(rt: Runtime) -> None:
        for lane in rt.lanes:
            lane.processor.resolver = hang

    stuck = [now_fields("u1", UNKNOWN_APP, 5.0)]
    async with serving_consumer(s, stick) as (rt, port):
        with HealthWatch(port) as watch:
            publish(s.redis_url, s.keys.stream_key, stuck)
            await wait_until(lambda: hang.waiting == 1, 30)
            others = _events(50)
            publish(s.redis_url, s.keys.stream_key, others)  # the other lanes still work
            await wait_until(lambda: rt.consumer.stats.committed >= len(others), 30)
            bound_s = rt.consumer.attempt_s + s.liveness_timeout_s
            await wait_until(lambda: bool(watch.overdue()), bound_s + 30)
            hang.release.set()
            await wait_until(lambda: is_drained(s), 30)
            await wait_until(lambda: watch.seen[-1][0] == 200, 30)
    late = watch.overdue()[0]  # the stuck lane, alone: the loop and the others are fine
    lanes = {f"lane {lane.settings.consumer_name}" for lane in rt.lanes}
    assert len(late) == 1 and set(late) <= lanes, late
    assert_exact(s, stuck + others)


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own: it is stopped (SIGSTOP) for a while."""
    with running(EmbeddedRedis()) as server:
        yield server


def _timed_get(url: str) -> tuple[float, int, bytes]:
    started = time.monotonic()
    status, body = http_get(url)
    return time.monotonic() - started, status, body


def _gauges(body: bytes) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name in pm.GROUP_GAUGES
    }


def test_metrics_and_readyz_answer_on_time_while_redis_hangs(
    settings: Settings, redis_server: EmbeddedRedis
) -> None:
    """redis-py's default retries used to hold each probe and each sample for many socket
    timeouts: longer than a scrape timeout, so the whole /metrics output was lost."""
    s = with_servers(settings, redis_url=redis_server.url)
    publish(s.redis_url, s.keys.stream_key, _events(7))
    client = redis.Redis.from_url(s.redis_url)
    client.xgroup_create(s.keys.stream_key, s.group, id="0")
    client.close()
    sampler = pm.GroupSampler(s)
    server = OpsServer(free_port(), pm.serving_registry(sampler), Probes(s)).start()
    base = f"http://127.0.0.1:{server.port}"
    bound_s = max(PROBE_TIMEOUT_S, pm.SAMPLE_TIMEOUT_S) + 1.5  # the bound, plus slack
    try:
        _, status, body = _timed_get(f"{base}/metrics")
        assert status == 200 and _gauges(body)["pomocore_stream_length"] == 7
        with stalled(redis_server):
            time.sleep(pm.SAMPLE_CACHE_S + 0.1)  # the cached sample is stale
            took, status, body = _timed_get(f"{base}/metrics")
            assert status == 200 and took < bound_s, took
            gauges = _gauges(body)
            assert gauges[UP] == 0
            assert gauges["pomocore_stream_length"] == 7  # the last sample, kept
            took, status, body = _timed_get(f"{base}/readyz")
            assert status == 503 and took < bound_s, took
            assert json.loads(body)["checks"]["redis"].startswith("error")
        wait_for(lambda: _gauges(_timed_get(f"{base}/metrics")[2])[UP] == 1, 30)
        wait_for(lambda: _timed_get(f"{base}/readyz")[1] == 200, 30)
    finally:
        server.close()


def test_single_flight_waits_at_most_its_timeout_and_runs_one_call_at_a_time() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        release.wait(30)
        return len(calls)

    flight = SingleFlight(slow, "test-flight")
    for _ in range(3):  # callers while the call hangs: each waits its timeout, no new call
        started = time.monotonic()
        with pytest.raises(CallTimeout):
            flight.call(0.2)
        assert time.monotonic() - started < 2.0
    assert calls == [1]
    release.set()
    served = flight.call(5.0)  # the hung call's result if it is still ending, else a new one
    assert served in (1, 2)
    assert flight.call(5.0) == served + 1  # a caller after a finished call starts a new one

    def failing() -> int:
        raise TimeoutError("a socket timeout inside the call")

    with pytest.raises(TimeoutError, match="socket timeout"):
        SingleFlight(failing, "test-failing").call(5.0)


def test_a_stop_during_a_restart_delay_is_a_clean_exit(settings: Settings, tmp_path: Path) -> None:
    """A child that died (here SIGKILLed twice: the second restart waits 0.5-1 s) is
    accounted for when it dies: a SIGTERM during the restart delay drains the live child
    and exits 0, not 1 for the dead one's exit code (the race behind a flaky
    test_the_supervisor_restarts_a_consumer_process_that_is_stuck)."""
    env = {**server_env(settings), "POMOCORE_BLOCK_MS": "100"}

    def started() -> list[int]:
        return [int(p) for p in re.findall(r'"child_pid": ?(\d+)', parent.output())]

    with spawn_consumer(env, "--processes", "2", log=tmp_path / "run.log") as parent:
        wait_for(lambda: len(started()) == 2, 60, parent.output)
        os.kill(started()[0], signal.SIGKILL)
        wait_for(lambda: len(started()) == 3, 60, parent.output)
        os.kill(started()[2], signal.SIGKILL)
        wait_for(lambda: parent.output().count("restarting") == 2, 30, parent.output)
        assert parent.stop(timeout_s=60) == 0, parent.output()[-3000:]
    assert len(started()) == 3  # stopped before the second restart


def _supervised_env(settings: Settings) -> dict[str, str]:
    """`pomocore run --processes 2` whose stuck children are found within seconds."""
    return {
        **server_env(settings),
        "POMOCORE_LIVENESS_TIMEOUT_S": "4",  # 2 s: a busy 2-core machine starved a healthy child
        "POMOCORE_BATCH_SIZE": "50",
        "POMOCORE_BLOCK_MS": "100",
    }


def _started_children(output: str) -> list[int]:
    """The pids of the children that have logged "consumer started", in that order."""
    return [
        int(json.loads(line)["pid"]) for line in output.splitlines()
        if '"consumer started"' in line
    ]  # fmt: skip


def _children_state(parent: Any) -> str:
    """The log, and each child's state and kernel wait channel: what a silent child is
    doing when a wait fails."""
    states = []
    for pid in re.findall(r'"child_pid": ?(\d+)', parent.output()):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            state = next(x for x in status.splitlines() if x.startswith("State:"))
            states.append(f"{pid}: {state}, wchan {Path(f'/proc/{pid}/wchan').read_text()}")
    return parent.output()[-3000:] + "\n" + "\n".join(states)


def test_the_supervisor_restarts_a_consumer_process_that_is_stuck(
    settings: Settings, tmp_path: Path
) -> None:
    """A child stopped dead (SIGSTOP: no loop, no thread runs) stops reporting itself
    alive; after the liveness timeout the parent kills it and starts it again, and the
    restarted child finishes what the stuck one held (same consumer name)."""
    env = _supervised_env(settings)
    first, second = _events(200), _events(300)
    deadline_s = startup_deadline_s(Settings.from_env(env))
    with spawn_consumer(env, "--processes", "2", log=tmp_path / "run.log") as parent:
        publish(settings.redis_url, settings.keys.stream_key, first)
        # Both children up (one stuck in start-up is restarted past the deadline).
        wait_for(lambda: len(_started_children(parent.output())) >= 2, deadline_s + 60,
                 lambda: _children_state(parent))  # fmt: skip
        wait_for(lambda: is_drained(settings), 60, lambda: _children_state(parent))
        stopped = _started_children(parent.output())[0]
        os.kill(stopped, signal.SIGSTOP)
        try:
            publish(settings.redis_url, settings.keys.stream_key, second)
            wait_for(lambda: "consumer process stuck; killing" in parent.output(), 60,
                     lambda: _children_state(parent))  # fmt: skip
            wait_for(lambda: is_drained(settings), 90, lambda: _children_state(parent))
            assert parent.stop(timeout_s=60) == 0, parent.output()[-3000:]
        finally:  # never leave a stopped orphan behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
    assert len(re.findall(r'"child_pid"', parent.output())) >= 3  # 2 + the restart
    assert_exact(settings, first + second)


def test_the_supervisor_restarts_a_consumer_process_stuck_in_start_up(
    settings: Settings, tmp_path: Path
) -> None:
    """A child stopped before it ever reports itself alive (SIGSTOP during its imports)
    is killed once the start-up deadline passes and started again; the events drain
    exactly. Before, a child that had never reported was left alone for good."""
    env = _supervised_env(settings)
    events = _events(300)
    deadline_s = startup_deadline_s(Settings.from_env(env))
    with spawn_consumer(env, "--processes", "2", log=tmp_path / "run.log") as parent:
        wait_for(lambda: '"child_pid"' in parent.output(), 30, parent.output, poll_s=0.01)
        stopped = int(re.findall(r'"child_pid": ?(\d+)', parent.output())[0])
        os.kill(stopped, signal.SIGSTOP)  # it takes ~1 s to import before it can report
        try:
            started_at = time.monotonic()
            publish(settings.redis_url, settings.keys.stream_key, events)
            wait_for(lambda: "stuck in start-up; killing" in parent.output(), deadline_s + 30,
                     lambda: _children_state(parent))  # fmt: skip
            assert time.monotonic() - started_at >= deadline_s - 1  # not before the deadline
            assert stopped not in _started_children(parent.output())
            wait_for(lambda: len(_started_children(parent.output())) == 2, 60,
                     lambda: _children_state(parent))  # fmt: skip
            wait_for(lambda: is_drained(settings), 60, lambda: _children_state(parent))
            assert parent.stop(timeout_s=60) == 0, parent.output()[-3000:]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
    assert_exact(settings, events)
