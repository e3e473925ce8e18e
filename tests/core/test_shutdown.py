"""`pomocore run` as a real process: SIGTERM under load, and --processes N."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from pomocore.core.settings import Settings
from pomocore.workload import Workload
from tests.support.expected import assert_exact
from tests.support.processes import ConsumerProcess, run_cli, server_env, spawn_consumer
from tests.support.streams import group_state, is_drained, publish
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)


CONSUMER_ENV = {
    "POMOCORE_BATCH_SIZE": "100",
    "POMOCORE_BLOCK_MS": "200",
    "POMOCORE_SHUTDOWN_TIMEOUT_S": "20",
}


def start_consumer(settings: Settings, log: Path, *args: str) -> ConsumerProcess:
    return spawn_consumer({**server_env(settings), **CONSUMER_ENV}, *args, log=log)


def wait_drained(settings: Settings, timeout_s: float = 90) -> None:
    wait_for(
        lambda: is_drained(settings),
        timeout_s,
        lambda: f"not drained: {group_state(settings)}",
        poll_s=0.1,
    )


def consumer_names(settings: Settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        consumers = client.xinfo_consumers(settings.keys.stream_key, settings.group)
        return [str(c["name"], "utf-8") for c in consumers]
    except redis.ResponseError:  # NOGROUP: no consumer has started yet
        return []
    finally:
        client.close()


def wait_joined(settings: Settings, consumer: str, timeout_s: float = 30) -> None:
    """Until the consumer has read from the group once: its signal handlers are set."""
    wait_for(
        lambda: any(  # lanes: name.i
            n == consumer or n.startswith(f"{consumer}.") for n in consumer_names(settings)
        ),
        timeout_s,
        f"consumer {consumer} never joined the group",
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_under_load_then_restart_is_exact(
    settings: Settings, processes: int, tmp_path: Path
) -> None:
    workload = Workload(users=200, distinct_variants=30, malformed_ratio=0.0, seed=processes)
    events = list(workload.events(6000))
    # Publish while the consumer runs, and stop it in the middle of the load.
    publisher = threading.Thread(
        target=lambda: [
            publish(settings.redis_url, settings.keys.stream_key, events[i : i + 300])
            for i in range(0, len(events), 300)
        ]
    )
    args = ("--processes", str(processes), "--consumer", "sigterm")
    with start_consumer(settings, tmp_path / "first.log", *args) as first:
        publisher.start()
        # Under load a consumer can take longer than the sleep to start: stop it only once
        # it is in the group (else the group may not exist yet: NOGROUP below).
        wait_joined(settings, "sigterm" if processes == 1 else "sigterm-0")
        time.sleep(1.5)
        started = time.monotonic()
        code = first.stop(timeout_s=60)
    out = first.output()
    assert code == 0, out[-2000:]
    assert time.monotonic() - started < 25
    client = redis.Redis.from_url(settings.redis_url)
    # Nothing the stopped consumer(s) read is left unacknowledged.
    assert client.xpending(settings.keys.stream_key, settings.group)["pending"] == 0
    publisher.join()

    with start_consumer(settings, tmp_path / "second.log", "--consumer", "after-restart") as second:
        # The first consumer may have drained everything already: SIGTERM must not reach
        # the second before it runs (Python's default action would kill it with -15).
        wait_joined(settings, "after-restart")
        wait_drained(settings)
        assert second.stop(timeout_s=60) == 0
    assert_exact(settings, events)
    if processes == 2:  # each child ran as its own consumer of the group
        assert '"consumer": "sigterm-0"' in out or '"consumer":"sigterm-0"' in out
        assert '"consumer": "sigterm-1"' in out or '"consumer":"sigterm-1"' in out


def test_bad_configuration_stops_start_up_naming_the_setting() -> None:
    proc = run_cli("run", env={"POMOCORE_BATCH_SIZE": "lots"}, timeout_s=30)
    assert proc.returncode == 2
    assert b"POMOCORE_BATCH_SIZE" in proc.stderr
