"""`pomocore run` as a real process: SIGTERM under load, and --processes N."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from pomocore.core.settings import Settings
from pomocore.workload import Workload
from tests.support.pipeline import (
    actual_leaderboards,
    assert_scores_equal,
    categories_of,
    group_state,
    publish,
    reference_leaderboards,
)

pytestmark = pytest.mark.timeout(180)


def start_consumer(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "POMOCORE_REDIS_URL": settings.redis_url,
        "POMOCORE_MONGO_URI": settings.mongo_uri,
        "POMOCORE_MONGO_DB": settings.mongo_db,
        "POMOCORE_BATCH_SIZE": "100",
        "POMOCORE_BLOCK_MS": "200",
        "POMOCORE_SHUTDOWN_TIMEOUT_S": "20",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pomocore.cli", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_drained(settings: Settings, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if group_state(settings.redis_url, settings.keys.stream_key, settings.group) == (0, 0):
            return
        time.sleep(0.1)
    raise AssertionError(
        f"not drained: {group_state(settings.redis_url, settings.keys.stream_key, settings.group)}"
    )


def wait_joined(settings: Settings, consumer: str, timeout_s: float = 30) -> None:
    """Until the consumer has read from the group once: its signal handlers are set."""
    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        consumers = client.xinfo_consumers(settings.keys.stream_key, settings.group)
        names = [str(c["name"], "utf-8") for c in consumers]
        if any(n == consumer or n.startswith(f"{consumer}.") for n in names):  # lanes: name.i
            return
        time.sleep(0.05)
    raise AssertionError(f"consumer {consumer} never joined the group")


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_under_load_then_restart_is_exact(settings: Settings, processes: int) -> None:
    workload = Workload(users=200, distinct_variants=30, malformed_ratio=0.0, seed=processes)
    events = list(workload.events(6000))
    first = start_consumer(settings, "--processes", str(processes), "--consumer", "sigterm")
    # Publish while the consumer runs, and stop it in the middle of the load.
    publisher = threading.Thread(
        target=lambda: [
            publish(settings.redis_url, settings.keys.stream_key, events[i : i + 300])
            for i in range(0, len(events), 300)
        ]
    )
    publisher.start()
    time.sleep(1.5)
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out.decode()[-2000:]
    assert time.monotonic() - started < 25
    client = redis.Redis.from_url(settings.redis_url)
    # Nothing the stopped consumer(s) read is left unacknowledged.
    assert client.xpending(settings.keys.stream_key, settings.group)["pending"] == 0
    publisher.join()

    second = start_consumer(settings, "--consumer", "after-restart")
    try:
        # The first consumer may have drained everything already: SIGTERM must not reach
        # the second before it runs (Python's default action would kill it with -15).
        wait_joined(settings, "after-restart")
        wait_drained(settings)
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=60)
    assert second.returncode == 0
    expected = reference_leaderboards(
        zip(events, categories_of(events), strict=True), settings.timezone
    )
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)
    import pymongo

    db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
    assert db.pomodoro_usage_log.count_documents({}) == len(events)
    if processes == 2:  # each child ran as its own consumer of the group
        assert b'"consumer": "sigterm-0"' in out or b'"consumer":"sigterm-0"' in out
        assert b'"consumer": "sigterm-1"' in out or b'"consumer":"sigterm-1"' in out


def test_bad_configuration_stops_start_up_naming_the_setting() -> None:
    env = {**os.environ, "POMOCORE_BATCH_SIZE": "lots"}
    proc = subprocess.run(
        [sys.executable, "-m", "pomocore.cli", "run"], env=env, capture_output=True, timeout=30
    )
    assert proc.returncode == 2
    assert b"POMOCORE_BATCH_SIZE" in proc.stderr
