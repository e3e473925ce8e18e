"""Metrics, probes, `pomocore check` and logs, against real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import time
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pomocore import metrics as pm
from pomocore.consumers.app import run_until_stopped, runtime
from pomocore.core.logs import JsonFormatter, TextFormatter, fingerprint
from pomocore.core.settings import Settings
from pomocore.embedded import free_port
from pomocore.health import (
    Probes,
    SupervisorOps,
    check_command,
    consumer_observer,
    start_consumer_ops,
)
from tests.support.http_client import http_get
from tests.support.processes import run_cli, server_env, spawn_consumer
from tests.support.streams import is_drained, now_fields, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + s.value
    return out


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    want = tuple(sorted(labels.items()))
    return sum(v for (n, ls), v in samples.items() if n == name and set(want) <= set(ls))


def events(n: int, user: str = "u") -> list[dict[str, str | bytes]]:
    return [now_fields(f"{user}{i % 7}", "Code", 30.0 + i) for i in range(n)]


async def test_single_process_metrics_and_probes(settings: Settings) -> None:
    port = free_port()
    settings = dataclasses.replace(settings, metrics_port=port)
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    bad: list[dict[str, str | bytes]] = [
        {"userId": "x", "app": "Code", "duration": "nan", "timestamp": str(time.time())}
    ]
    publish(settings.redis_url, settings.keys.stream_key, events(120) + bad)
    stop = asyncio.Event()
    observer = consumer_observer(settings)
    async with runtime(settings, observer) as rt:
        ops = start_consumer_ops(rt, stop, observer)
        try:
            before = await asyncio.to_thread(scrape, port)
            task = asyncio.create_task(run_until_stopped(rt, stop))
            await wait_until(lambda: is_drained(settings), 30)
            await asyncio.sleep(pm.SAMPLE_CACHE_S + 0.1)
            status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")
            assert status == 200, body
            assert json.loads(body)["checks"] == {
                "redis": "ok", "group": "ok", "mongo": "ok", "consumer": "ok", "draining": "no"
            }  # fmt: skip
            after = await asyncio.to_thread(scrape, port)
            assert (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz"))[0] == 200
            # counters kept by the runtime's objects, copied by the periodic sync
            registry = CollectorRegistry()
            pm.sync_process_counters(rt, pm.PipelineMetrics(registry), pm.CounterSync())
            calls = registry.get_sample_value("pomocore_commit_calls_total")
            plans = registry.get_sample_value("pomocore_commit_plans_total")
            assert calls is not None and plans is not None and 1 <= calls <= plans
            group = rt.consumer.processor.committer.commit_group
            assert (calls, plans) == (group.calls, group.plans)
            stop.set()
            status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")
            assert status == 503 and json.loads(body)["checks"]["draining"] == "yes"
            await task
        finally:
            ops.close()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pomocore_events_read_total") == 121
    assert delta("pomocore_events_processed_total") == 120
    assert delta("pomocore_events_rejected_total", reason="not_finite") == 1
    assert delta("pomocore_classifications_total") == 120
    assert delta("pomocore_batch_size_count") >= 1
    assert delta("pomocore_batch_size_sum") == 121
    assert delta("pomocore_end_to_end_latency_seconds_count") >= 1
    assert delta("pomocore_op_duration_seconds_count", backend="mongo", op="bulk_write") >= 1
    assert delta("pomocore_op_duration_seconds_count", backend="redis", op="commit_script") >= 1
    assert value(after, "pomocore_group_lag") == 0
    assert value(after, "pomocore_group_pending") == 0
    assert value(after, "pomocore_dead_letter_length") == 1
    assert value(after, "pomocore_stream_length") == 121
    assert value(after, "pomocore_group_sample_up") == 1
    # The shared lost-to-trim count is `pomocore status`'s, not a series: the counter
    # pomocore_events_lost_to_trim_total replaced the gauge pomocore_lost_to_trim.
    names = {name for name, _ in after}
    lost = {n for n in names if "lost_to_trim" in n}
    assert lost <= {"pomocore_events_lost_to_trim_total", "pomocore_events_lost_to_trim_created"}
    assert "pomocore_events_lost_to_trim_total" in lost
    assert "pomocore_lost_to_trim" not in pm.metric_names()


def test_group_sampler_reports_oldest_pending_age(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    key = settings.keys.stream_key
    client.xgroup_create(key, settings.group, id="0", mkstream=True)
    old_ms = int(time.time() * 1000) - 120_000
    client.xadd(key, {"userId": "a"}, id=f"{old_ms}-0")
    client.xadd(key, {"userId": "b"})
    client.xreadgroup(settings.group, "c1", {key: ">"}, count=1)  # one pending, one lagging
    client.close()
    values = pm.GroupSampler(settings).sample()
    assert values["pomocore_group_pending"] == 1
    assert values["pomocore_group_lag"] == 1
    assert 119 <= values["pomocore_oldest_pending_age_seconds"] <= 180


async def test_group_sampler_reports_derived_staleness(settings: Settings) -> None:
    import dataclasses

    import redis.asyncio as aioredis

    from pomocore.sinks.derived import DerivedRefresher

    s = dataclasses.replace(settings, leaderboard_mode="derived")
    client = redis.Redis.from_url(s.redis_url)
    client.sadd(s.keys.derived_stale_key, "leaderboard:SNS:2026-11-22")
    values = pm.GroupSampler(s).sample()
    assert values["pomocore_derived_stale_days"] == 1
    assert "pomocore_derived_refresh_age_seconds" not in values  # never refreshed yet
    await DerivedRefresher(aioredis.Redis.from_url(s.redis_url), s.keys, 5.0).refresh_once()
    values = pm.GroupSampler(s).sample()
    assert values["pomocore_derived_stale_days"] == 0
    assert 0 <= values["pomocore_derived_refresh_age_seconds"] < 5
    assert "pomocore_derived_stale_days" not in pm.GroupSampler(settings).sample()  # exact
    client.close()


def test_processes_n_metrics_are_aggregated_by_the_parent(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {**server_env(settings), "POMOCORE_BATCH_SIZE": "50", "POMOCORE_BLOCK_MS": "200"}
    args = ("--processes", "2", "--metrics-port", str(port))
    with spawn_consumer(env, *args, log=tmp_path / "run.log") as consumer:
        publish(settings.redis_url, settings.keys.stream_key, events(400))
        deadline = time.monotonic() + 60
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except (OSError, AssertionError):
                time.sleep(0.2)
                continue
            lagging = value(samples, "pomocore_group_lag") + value(
                samples, "pomocore_group_pending"
            )
            seen = any(k[0] == "pomocore_group_lag" for k in samples)
            if value(samples, "pomocore_events_processed_total") >= 400 and seen and not lagging:
                break
            time.sleep(0.2)
        assert value(samples, "pomocore_events_processed_total") == 400
        assert value(samples, "pomocore_events_read_total") == 400
        # the group gauges come once, from the parent, not once per child
        lag = [k for k in samples if k[0] == "pomocore_group_lag"]
        assert len(lag) == 1
        # PROMETHEUS_MULTIPROC_DIR is set, yet the process metrics and the build info are there
        assert value(samples, "process_resident_memory_bytes") > 0
        assert value(samples, "process_cpu_seconds_total") > 0
        assert value(samples, "pomocore_build_info", version=pm.package_version()) == 1
        # every category counted under the conventional name, none under the old one
        assert value(samples, "pomocore_events_categorized_total") == 400
        assert not any(k[0].startswith("pomocore_events_by_category") for k in samples)
        # the live scrape exposes only names the exporter declares (alerts check against them)
        exposed = {k[0] for k in samples if k[0].startswith(("pomocore_", "process_"))}
        assert exposed <= pm.metric_names(), exposed - pm.metric_names()
        status, _ = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        code = consumer.stop(timeout_s=60)
    assert code == 0, consumer.output()[-2000:]


def test_check_command_exit_codes(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    client.xgroup_create(settings.keys.stream_key, settings.group, id="0", mkstream=True)
    client.close()
    out = io.StringIO()
    assert check_command(settings, out) == 0
    assert json.loads(out.getvalue())["ready"] is True
    down = dataclasses.replace(settings, redis_url=f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    out = io.StringIO()
    assert check_command(down, out) == 1
    assert "s3cret" not in out.getvalue()
    missing_group = dataclasses.replace(settings, group="nope")
    assert check_command(missing_group, io.StringIO()) == 1


def test_check_subcommand_process(settings: Settings) -> None:
    result = run_cli("check", env=server_env(settings))
    assert result.returncode == 1  # no group yet
    assert json.loads(result.stdout)["checks"]["group"].startswith("error")


def test_probes_report_mongo_down(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    client.xgroup_create(settings.keys.stream_key, settings.group, id="0", mkstream=True)
    client.close()
    bad = dataclasses.replace(settings, mongo_uri=f"mongodb://127.0.0.1:{free_port()}")
    probes = Probes(bad, timeout_s=0.5)
    ok, checks = probes.readiness()
    probes.close()
    assert not ok and checks["mongo"].startswith("error") and checks["redis"] == "ok"


def test_logs_json_one_line_and_text() -> None:
    record = logging.LogRecord(
        "pomocore.t", logging.INFO, __file__, 1, "batch\ncommitted", (), None
    )
    record.batch_id = "abc123"
    record.title = fingerprint("секрет title")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["batch_id"] == "abc123" and doc["title"].startswith("sha256:")
    assert "секрет" not in line
    assert "batch_id=abc123" in TextFormatter().format(record)


def test_secrets_redacted_and_file_conflicts(tmp_path: object) -> None:
    settings = Settings.from_env(
        {
            "POMOCORE_REDIS_URL": "redis://worker:pw123@r:6379/0",
            "POMOCORE_MONGO_URI": "mongodb://app:pw456@m:27017",
            "POMOCORE_LLM_API_KEY": "sk-secret",
        }
    )
    text = json.dumps(settings.describe())
    assert "pw123" not in text and "pw456" not in text and "sk-secret" not in text
    from pomocore.core.errors import ConfigError

    with pytest.raises(ConfigError, match="POMOCORE_REDIS_URL"):
        Settings.from_env(
            {"POMOCORE_REDIS_URL": "redis://x", "POMOCORE_REDIS_URL_FILE": "/nonexistent"}
        )


def test_sample_ids_and_entry_ms() -> None:
    entries = [(f"{1000 + i}-0", None) for i in range(100)]
    ids = pm.sample_ids(entries, 32)
    assert len(ids) == 32 and ids[0] == "1000-0" and ids[-1] == "1099-0"
    assert pm.entry_ms("1700000000123-7") == 1700000000123


@pytest.mark.parametrize(
    ("host", "reachable_on_other_address"), [("127.0.0.1", False), ("0.0.0.0", True)]
)
def test_the_ops_server_binds_to_the_configured_address(
    settings: Settings, host: str, reachable_on_other_address: bool
) -> None:
    """POMOCORE_METRICS_HOST: 127.0.0.1 keeps /metrics and the probes on this host only."""
    ops = SupervisorOps(dataclasses.replace(settings, metrics_port=free_port(), metrics_host=host))
    ops.start(draining=lambda: False, alive=lambda: True)
    try:
        server = ops.ops.server
        assert server is not None
        assert server.httpd.server_address[0] == host
        # 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not answer on it.
        status = _status_or_none(f"http://127.0.0.2:{server.port}/healthz")
        assert (status == 200) is reachable_on_other_address
    finally:
        ops.close()


def _status_or_none(url: str) -> int | None:
    try:
        return http_get(url)[0]
    except OSError:
        return None
