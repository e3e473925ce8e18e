"""`pomocore status` against a real Valkey: the table, `--json`, the verdict and its exit
code, `--watch`, and that it needs nothing but reads (it runs as a read-only ACL user)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from pomocore import status
from pomocore.classifiers.llm.budget import Budget
from pomocore.classifiers.llm.queue import PendingQueue
from pomocore.core.settings import Settings
from pomocore.status import StatusOptions, Thresholds, collect, render, status_command
from tests.support.consumer import serving_consumer
from tests.support.processes import run_cli
from tests.support.streams import is_drained, now_fields, publish
from tests.support.waiting import wait_until

# What `pomocore status` may run (its docstring, docs/cli.md and the `monitor` role):
# reads only, and the connection set-up redis-py sends.
READ_ONLY_COMMANDS = (
    "+client|setinfo", "+exists", "+xinfo|groups", "+xinfo|consumers", "+xpending", "+xlen",
    "+xrange", "+get", "+mget", "+scard", "+zcard", "+zrange", "+zscore",
)  # fmt: skip
TABLE_ROWS = (
    "redis", "stream", "group", "consumers", "dead letters", "lost to trim", "LLM",
    "leaderboards", "retention",
)  # fmt: skip
JSON_KEYS = {
    "healthy", "problems", "warnings", "checked_at", "redis", "stream", "group",
    "stream_length", "group_exists", "lag", "pending", "oldest_pending_age_s",
    "oldest_pending_idle_s", "consumers", "dead_letters", "lost_to_trim", "llm",
    "leaderboards", "retention",
}  # fmt: skip


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    return {"POMOCORE_REDIS_URL": settings.redis_url, **extra}


def group_with_reader(settings: Settings, entries: int = 5, read: int = 2) -> redis.Redis:
    """A stream of `entries`, the group, and one consumer that has just read `read` of
    them (pending, not acknowledged): lag entries - read, an active consumer."""
    client = redis.Redis.from_url(settings.redis_url)
    keys = settings.keys
    for i in range(entries):
        client.xadd(keys.stream_key, {"n": str(i)})
    client.xgroup_create(keys.stream_key, settings.group, id="0")
    client.xreadgroup(settings.group, "host-1-0", {keys.stream_key: ">"}, count=read)
    return client


def test_a_missing_group_is_unhealthy_exit_1(settings: Settings) -> None:
    result = run_cli("status", env=env_of(settings))
    assert result.returncode == 1, result.stderr
    text = result.stdout.decode()
    assert text.startswith("pomocore status: UNHEALTHY")
    assert f"group {settings.group} does not exist" in text
    for row in TABLE_ROWS:
        assert f"\n  {row} " in text, row


def test_json_report_has_the_documented_keys_and_exit_0_when_healthy(settings: Settings) -> None:
    group_with_reader(settings).close()
    result = run_cli("status", "--json", env=env_of(settings))
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.decode().splitlines()  # one document
    report = json.loads(line)
    assert set(report) == JSON_KEYS
    assert report["healthy"] is True and report["problems"] == []
    assert (report["stream_length"], report["lag"], report["pending"]) == (5, 3, 2)
    (consumer,) = report["consumers"]
    assert consumer["name"] == "host-1-0" and consumer["pending"] == 2 and consumer["active"]
    assert report["retention"]["stream_maxlen"] == 0


def test_lag_and_old_pending_entries_are_problems(settings: Settings) -> None:
    client = group_with_reader(settings)
    report = collect(client, settings, Thresholds(max_lag=2, max_pending_age_s=0.0))
    client.close()
    assert not report["healthy"]
    assert any("lag 3 entries is above 2" in p for p in report["problems"])
    assert any("oldest pending entry" in p for p in report["problems"])


def test_no_active_consumer_while_entries_wait_is_a_problem(settings: Settings) -> None:
    client = group_with_reader(settings)
    time.sleep(0.05)
    report = collect(client, settings, Thresholds(active_within_s=0.01))
    client.close()
    assert [c["active"] for c in report["consumers"]] == [False]
    assert any("no consumer read" in p and "5 entries wait" in p for p in report["problems"])


def test_dead_letters_by_reason_warn_but_stay_healthy(settings: Settings) -> None:
    client = group_with_reader(settings)
    dlq = settings.keys.dead_letter_key
    for reason in ("invalid_json", "max_deliveries", "invalid_json"):
        client.xadd(dlq, {"dlq.reason": reason, "userId": "u"})
    report = collect(client, settings)
    client.close()
    assert report["healthy"]
    assert report["dead_letters"] == {
        "total": 3,
        "by_reason": {"invalid_json": 2, "max_deliveries": 1},
        "scanned": 3,
    }
    assert any(
        w.startswith("3 dead letters (invalid_json 2, max_deliveries 1)")
        for w in report["warnings"]
    )
    assert "dead letters  3 (invalid_json 2, max_deliveries 1)" in render(report)


def test_derived_mode_never_refreshed_is_a_problem(settings: Settings) -> None:
    derived = dataclasses.replace(settings, leaderboard_mode="derived")
    client = group_with_reader(derived)
    client.sadd(derived.keys.derived_stale_key, "leaderboard:work:2026-02-12")
    report = collect(client, derived)
    client.close()
    assert report["leaderboards"] == {"mode": "derived", "stale_days": 1, "refresh_age_s": None}
    assert any("never refreshed" in p for p in report["problems"])


class MetricsPage:
    """A `/metrics` page served on a free port (a consumer's, as far as status can tell)."""

    def __init__(self, text: str) -> None:
        body = text.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def open_circuit_page() -> Iterator[str]:
    page = MetricsPage(
        "# TYPE pomocore_llm_circuit_state gauge\n"
        'pomocore_llm_circuit_state{state="closed"} 0\n'
        'pomocore_llm_circuit_state{state="open"} 1\n'
    )
    yield page.url
    page.close()


def test_llm_queue_budget_and_circuit(settings: Settings, open_circuit_page: str) -> None:
    llm = dataclasses.replace(settings, llm_base_url="http://127.0.0.1:9/v1", llm_calls_per_min=3)

    async def queue_and_spend() -> None:
        client = aioredis.Redis.from_url(llm.redis_url)
        await PendingQueue.from_settings(client, llm).add([("App", "", "a title")])
        assert await Budget.from_settings(client, llm).acquire(100)
        await client.aclose()

    asyncio.run(queue_and_spend())
    client = group_with_reader(llm)
    report = collect(client, llm, metrics_urls=[open_circuit_page, "http://127.0.0.1:9/metrics"])
    client.close()
    assert report["llm"]["enabled"] and report["llm"]["queue_depth"] == 1
    assert report["llm"]["calls_left"] == 2 and report["llm"]["calls_per_min"] == 3
    assert report["llm"]["queue_oldest_age_s"] is not None
    assert report["llm"]["circuit"] == "open"  # the unreachable URL leaves it to the other
    assert any("LLM circuit open" in w for w in report["warnings"])
    assert report["healthy"]  # a warning, not a failure


@pytest.mark.parametrize(
    ("page", "state"),
    [
        ("pomocore_llm_circuit_state 0\n", "closed"),
        ("pomocore_llm_circuit_state 1\n", "half_open"),
        ('pomocore_llm_circuit_state{state="half_open"} 1\n', "half_open"),
        ('pomocore_llm_circuit_state{state="open"} 0\n', None),
        ("pomocore_group_lag 3\n", None),
    ],
)
def test_circuit_read_as_a_number_or_a_state_label(page: str, state: str | None) -> None:
    values = status._circuit_values(page)
    assert (status.CIRCUIT_NAMES[max(values)] if values else None) == state


async def test_a_running_consumer_is_healthy(settings: Settings) -> None:
    async with serving_consumer(settings) as (_rt, port):
        publish(settings.redis_url, settings.keys.stream_key, [now_fields("u1", "Code", 60.0)])
        await wait_until(lambda: is_drained(settings), timeout_s=30)
        url = f"http://127.0.0.1:{port}/metrics"
        out = io.StringIO()
        options = StatusOptions(as_json=True, metrics_urls=(url,))
        code = await asyncio.to_thread(status_command, settings, options, out)
    report = json.loads(out.getvalue())
    assert code == 0, report["problems"]
    assert len([c for c in report["consumers"] if c["active"]]) == settings.lanes
    # read from the consumer's /metrics (its value is this test process's: earlier LLM
    # tests in the same process may have left the shared gauge at "open")
    assert report["llm"]["circuit"] in ("closed", "half_open", "open")


def test_watch_prints_report_after_report_when_not_a_tty(settings: Settings) -> None:
    group_with_reader(settings).close()
    out = io.StringIO()
    options = StatusOptions(watch=True, count=3, interval_s=0.1)
    assert status_command(settings, options, out, tty=False, sleep=lambda _: None) == 0
    text = out.getvalue()
    assert text.count("pomocore status: HEALTHY") == 3
    assert "\x1b[" not in text and "\r" not in text


def test_watch_redraws_in_place_on_a_tty(settings: Settings) -> None:
    group_with_reader(settings).close()
    out = io.StringIO()
    options = StatusOptions(watch=True, count=2, interval_s=0.1)
    assert status_command(settings, options, out, tty=True, sleep=lambda _: None) == 0
    assert out.getvalue().count("\x1b[H\x1b[2J") == 2


def test_watch_goes_on_while_redis_is_unavailable() -> None:
    settings = Settings.from_dsn("redis://:pw@127.0.0.1:1/0")
    out = io.StringIO()
    options = StatusOptions(watch=True, count=2, interval_s=0.1, as_json=True)
    assert status_command(settings, options, out, tty=False, sleep=lambda _: None) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2 and all(not r["healthy"] for r in lines)
    assert "Redis unavailable at redis://:***@127.0.0.1:1/0" in lines[0]["error"]


@pytest.fixture
def monitor_url(settings: Settings) -> Iterator[str]:
    """A user allowed READ_ONLY_COMMANDS on read-only keys, nothing else."""
    admin = redis.Redis.from_url(settings.redis_url)
    admin.execute_command(
        "ACL", "SETUSER", "status-reader", "reset", "on", ">status-pw", "%R~*", "-@all",
        *READ_ONLY_COMMANDS,
    )  # fmt: skip
    yield settings.redis_url.replace("redis://", "redis://status-reader:status-pw@", 1)
    admin.execute_command("ACL", "DELUSER", "status-reader")
    admin.close()


def test_status_needs_only_reads(settings: Settings, monitor_url: str) -> None:
    # Every branch that reads: dead letters (XRANGE), derived mode (SCARD, GET), the LLM
    # queue and budget (ZCARD, ZRANGE, MGET), the consumers (XINFO CONSUMERS, XPENDING).
    client = group_with_reader(settings)
    client.xadd(settings.keys.dead_letter_key, {"dlq.reason": "invalid_json"})
    client.sadd(settings.keys.derived_stale_key, "leaderboard:work:2026-02-12")
    client.set(settings.keys.derived_last_refresh_key, "1")
    client.close()
    env = env_of(
        settings,
        POMOCORE_REDIS_URL=monitor_url,
        POMOCORE_LEADERBOARD_MODE="derived",
        POMOCORE_LLM_BASE_URL="http://127.0.0.1:9/v1",
    )
    result = run_cli("status", "--json", env=env)
    assert result.returncode == 1, result.stderr  # derived keys stale since 1970
    report = json.loads(result.stdout)
    assert [p for p in report["problems"] if "derived mode" not in p] == []
    assert report["dead_letters"]["scanned"] == 1 and report["llm"]["enabled"]
