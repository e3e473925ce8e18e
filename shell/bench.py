"""`pomocore bench`: pomocore side by side with the Redis ceiling, a naive pipeline, Celery
and a plain exact implementation, on the same servers, in one session.

Variants (each runs as its own consumer process, so CPU and RSS are per process):

    a  ceiling      XREADGROUP COUNT n + XACK through redis-py asyncio + hiredis + uvloop
    b  pomocore     the real consumer (consumers.app.runtime + run_until_stopped), all sinks
    c  pomocore-lb  the same with POMOCORE_SINKS=leaderboard (our cost without MongoDB's)
    d  naive        per message: categorized_data lookup, insert, ZINCRBYs, XACK (sync clients)
    e  celery       one Celery task per event (Redis broker, solo pool): classify + ZINCRBYs
    f  plain        read, classify by dict, aggregate per batch, one Lua script that acks
                    and increments; no validation, no MongoDB (the reference for the bound)

How a run works: the workload (pomocore.workload, the generator `pomocore demo` uses) is
published once per (size, users, distinct keys); every run reads it through a fresh
consumer group created at id 0, so all variants read identical entries. The consumer
processes start, build everything, report READY; the parent snapshots Redis `INFO cpu`
and says GO; each process records the wall time of its last acknowledgement; the parent
polls the group until `entries-read` = N and nothing is pending, then stops the
consumers, checks that exactly N entries were acknowledged, and deletes what the run
wrote (leaderboard keys, dead letters, session scores, the group, the MongoDB database).

Throughput = N / (last acknowledgement − GO). Latency is measured in a second pass at
half of the variant's median throughput: the parent publishes at that rate while the
consumers run, and each consumer records, per event, acknowledgement time − the
millisecond part of the stream entry id (for Celery: − the time the task was sent).

Servers: an EmbeddedRedis (and EmbeddedMongo for b, d) on free ports, or the servers in
POMOCORE_REDIS_URL / POMOCORE_MONGO_URI; every key, group and database then carries a
unique `pomobench-<id>` prefix and only those are deleted. Nothing is ever flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VARIANTS: dict[str, tuple[str, str]] = {
    "a": ("ceiling", "XREADGROUP COUNT n + XACK, redis-py asyncio + hiredis + uvloop"),
    "b": ("pomocore", "pomocore, all sinks (MongoDB + leaderboard)"),
    "c": ("pomocore-lb", "pomocore, POMOCORE_SINKS=leaderboard"),
    "d": ("naive", "per message: lookup, insert, ZINCRBYs, XACK"),
    "e": ("celery", "Celery task per event, Redis broker, solo pool"),
    "f": ("plain", "read, dict classify, aggregate, 1 Lua ack+ZINCRBY"),
    "g": ("pomocore-derived", "c with POMOCORE_LEADERBOARD_MODE=derived (refresh every 1 s)"),
}
MONGO_VARIANTS = frozenset("bd")
SLOW_VARIANTS = frozenset("de")
SWEEPS = ("batch", "processes", "users", "hit", "rss")
SWEEP_VALUES: dict[str, tuple[int, ...]] = {
    "batch": (10, 100, 500, 1000, 5000),
    "processes": (1, 2, 3, 4),
    "users": (50, 2_000, 20_000, 100_000),
    "hit": (1, 200, 5_000, 1_000_000),  # Workload.distinct_variants: {n} values per template
    "rss": (100_000, 1_000_000),  # events, with 1M distinct URLs
}
SWEEP_VARIANTS = {"batch": "acf", "processes": "acfg", "users": "cf", "hit": "cf", "rss": "c"}
PUBLISH_CHUNK = 2000


# --------------------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------------------


@dataclass
class BenchOptions:
    events: int = 200_000
    slow_events: int = 5_000  # for d and e (per-event figures are scaled, not the counts)
    mongo_events: int = 50_000  # for b: bounded by the MongoDB server (nx-27017 here)
    runs: int = 3
    variants: str = "abcdefg"
    sweeps: tuple[str, ...] = ()
    sweep_events: int = 0  # 0 = events // 2
    batch_size: int = 1000
    processes: int = 1
    users: int = 3_000  # pomocore demo's default
    distinct_variants: int = 200  # pomocore demo's value
    latency: bool = True
    latency_seconds: float = 6.0
    out: Path = Path("benchmarks/results")
    plots: bool = True
    quiet: bool = False
    profile: str = ""  # "", "cprofile" or "py-spy": profile the consumer of variant c


@dataclass
class RunResult:
    variant: str
    name: str
    events: int
    batch_size: int
    processes: int
    users: int
    distinct_variants: int
    elapsed_s: float
    events_per_s: float
    consumer_cpu_us_per_event: float
    redis_cpu_us_per_event: float
    redis_round_trips_per_1k: float
    mongo_round_trips_per_1k: float
    peak_rss_mb: float
    acked: int
    drained_exactly: bool
    cache_hit_ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LatencyResult:
    variant: str
    rate: float
    events: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cdf: list[tuple[float, float]]  # (latency ms, fraction)


# --------------------------------------------------------------------------------------
# Parent: servers, publishing, runs
# --------------------------------------------------------------------------------------


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[k])


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        return math.nan
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def redis_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._last = 0.0

    def bar(self, label: str, done: int, total: int, started: float, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        width = 28
        filled = int(width * min(done, total) / max(total, 1))
        rate = done / max(now - started, 1e-9)
        print(
            f"\r  {label:<34} {'█' * filled}{'·' * (width - filled)} {done:>9,}/{total:,}"
            f" {rate:>9,.0f}/s",
            end="",
            flush=True,
        )

    def done(self, text: str) -> None:
        if not self.quiet:
            print(f"\r  {text:<100}", flush=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


class Bench:
    """One benchmark session: servers, published streams, runs."""

    def __init__(self, options: BenchOptions) -> None:
        import redis

        self.o = options
        self.session = uuid.uuid4().hex[:8]
        self.prefix = f"pomobench-{self.session}:"
        self.stack = contextlib.ExitStack()
        self.progress = Progress(options.quiet)
        self.workdir = Path(tempfile.mkdtemp(prefix="pomobench-"))
        self.stack.callback(shutil.rmtree, self.workdir, True)
        self.redis_url, self.mongo_uri, self.external = self._servers()
        self.r = redis.Redis.from_url(self.redis_url)
        self.streams: dict[tuple[int, int, int, int], str] = {}
        self.runs: list[RunResult] = []
        self.latencies: list[LatencyResult] = []
        self.sweeps: dict[str, list[RunResult]] = {}
        self._run_no = 0
        self._owned_keys: set[str] = set()

    # --- servers ---

    def _servers(self) -> tuple[str, str, bool]:
        from pomocore.embedded import EmbeddedMongo, EmbeddedRedis

        redis_url = os.environ.get("POMOCORE_REDIS_URL", "")
        mongo_uri = os.environ.get("POMOCORE_MONGO_URI", "")
        external = bool(redis_url)
        if not redis_url:
            server = EmbeddedRedis(self.workdir / "valkey")
            server.start()
            self.stack.callback(server.close)
            redis_url = server.url
        needs_mongo = bool(set(self.o.variants) & MONGO_VARIANTS)
        if needs_mongo and not mongo_uri:
            mongo = EmbeddedMongo(self.workdir / "mongo")
            mongo.start(timeout_s=60)
            self.stack.callback(mongo.close)
            mongo_uri = mongo.url
        return redis_url, mongo_uri, external

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for key in self._owned_keys:
                self.r.unlink(key)
            self.r.close()
        self.stack.close()

    def machine(self) -> dict[str, Any]:
        info = self.r.info("server")
        version = info.get("valkey_version") or info.get("redis_version")
        lscpu = ""
        with contextlib.suppress(Exception):
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in lscpu.splitlines()
                if ln.startswith("Model name")
            ),
            platform.processor(),
        )
        return {
            "nproc": os.cpu_count(),
            "cpu_model": model,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "redis_server": f"{info.get('server_name', 'redis')} {version}",
            "redis_external": self.external,
            "mongo": "external" if os.environ.get("POMOCORE_MONGO_URI") else "nx-27017 (embedded)",
            "loadavg_at_start": os.getloadavg(),
        }

    # --- publishing ---

    def stream(self, events: int, users: int, variants: int, seed: int = 7) -> str:
        """The stream holding `events` workload entries (published once per shape)."""
        shape = (events, users, variants, seed)
        if shape in self.streams:
            return self.streams[shape]
        from pomocore.workload import Workload

        key = f"{self.prefix}stream:{events}:{users}:{variants}:{seed}"
        self._owned_keys.add(key)
        workload = Workload(users=users, distinct_variants=variants, seed=seed)
        started = time.perf_counter()
        published = 0
        label = f"publish {events:,} ({users:,} users, {variants:,} keys/tpl)"
        while published < events:
            pipe = self.r.pipeline(transaction=False)
            n = min(PUBLISH_CHUNK, events - published)
            for fields in workload.events(n):
                pipe.execute_command("XADD", key, "*", *_flatten(fields))  # type: ignore[no-untyped-call]
            pipe.execute()
            published += n
            self.progress.bar(label, published, events, started)
        self.progress.done(f"{label}: {time.perf_counter() - started:.1f}s")
        self.streams[shape] = key
        return key

    # --- one run ---

    def _names(self) -> dict[str, str]:
        self._run_no += 1
        p = f"{self.prefix}r{self._run_no}:"
        return {
            "group": f"{p}group",
            "leaderboard_prefix": f"{p}leaderboard",
            "dead_letter_stream": f"{p}dlq",
            "session_score_stream": f"{p}sessions",
            "celery_queue": f"{p}celery",
            "celery_done": f"{p}celery:done",
            "mongo_db": f"pomobench_{self.session}_r{self._run_no}",
            "run": str(self._run_no),
        }

    def _cleanup(self, names: dict[str, str], stream: str | None) -> None:
        if stream:
            with contextlib.suppress(Exception):
                self.r.xgroup_destroy(stream, names["group"])
        batch: list[bytes] = []
        for pattern in (f"{names['leaderboard_prefix']}:*",):
            for key in self.r.scan_iter(match=pattern, count=5000):
                batch.append(key)
                if len(batch) >= 1000:
                    self.r.unlink(*batch)
                    batch.clear()
        if batch:
            self.r.unlink(*batch)
        from pomocore.core.keys import KeySpace

        derived = KeySpace(leaderboard_prefix=names["leaderboard_prefix"])  # variant g
        self.r.unlink(
            names["dead_letter_stream"],
            names["session_score_stream"],
            names["celery_queue"],
            names["celery_done"],
            derived.derived_stale_key,
            derived.derived_refreshing_key,
            derived.derived_lock_key,
            derived.derived_last_refresh_key,
        )
        for key in self.r.scan_iter(match=f"{self.prefix}r{names['run']}:*", count=5000):
            self.r.unlink(key)
        if self.mongo_uri and names.get("used_mongo"):
            from pymongo import MongoClient

            with contextlib.suppress(Exception):
                client: Any = MongoClient(self.mongo_uri, serverSelectionTimeoutMS=5000)
                client.drop_database(names["mongo_db"])
                client.close()

    def run_variant(
        self,
        variant: str,
        *,
        events: int,
        batch_size: int,
        processes: int = 1,
        users: int | None = None,
        distinct_variants: int | None = None,
        latency_rate: float | None = None,
        label: str = "",
        profile: str = "",
    ) -> tuple[RunResult, list[float]]:
        users = users or self.o.users
        dv = distinct_variants or self.o.distinct_variants
        names = self._names()
        names["used_mongo"] = "1" if variant in MONGO_VARIANTS else ""
        stream: str | None = None
        if variant == "e":
            expected = events
        elif latency_rate is None:
            stream = self.stream(events, users, dv)
            self.r.xgroup_create(stream, names["group"], id="0")
            expected = events
        else:  # latency pass: a fresh, empty stream filled while the consumers run
            stream = f"{self.prefix}r{names['run']}:live"
            self.r.xgroup_create(stream, names["group"], id="0", mkstream=True)
            expected = min(events, max(1000, int(latency_rate * self.o.latency_seconds)))
        result_files = [self.workdir / f"r{names['run']}-{i}.json" for i in range(processes)]
        specs = [
            {
                "variant": variant,
                "redis_url": self.redis_url,
                "mongo_uri": self.mongo_uri,
                "stream": stream,
                "consumer": f"bench-{names['run']}-{i}",
                "batch_size": batch_size,
                "latency": latency_rate is not None,
                "result_file": str(result_files[i]),
                "profile": profile if i == 0 else "",
                "profile_file": str(
                    self.o.out.resolve()
                    / f"profile-{variant}.{'txt' if profile == 'cprofile' else 'collapsed'}"
                ),
                **names,
            }
            for i in range(processes)
        ]
        if variant == "e":
            celery_app = _celery_app(self.redis_url, names["celery_queue"])
            if latency_rate is None:
                self._celery_publish(celery_app, names["celery_queue"], events, users, dv)
        children = [_spawn_child(spec) for spec in specs]
        try:
            for child in children:
                _expect(child, "READY", 120)
            cpu0 = redis_cpu_s(self.r)
            t_go = time.time()
            for child in children:
                assert child.stdin is not None
                child.stdin.write(f"GO {t_go!r}\n")
                child.stdin.flush()
            title = label or f"{variant} {VARIANTS[variant][0]}"
            started = time.perf_counter()
            if latency_rate is not None:
                self._publish_paced(
                    variant, stream, names, expected, latency_rate, users, dv, title
                )
            cpu1 = self._wait_drained(variant, stream, names, expected, title, started, children)
            for child in children:
                assert child.stdin is not None
                child.stdin.write("STOP\n")
                child.stdin.flush()
            for child in children:
                try:
                    child.wait(120)
                except subprocess.TimeoutExpired:
                    child.kill()
                    raise
                if child.returncode != 0:
                    raise RuntimeError(f"variant {variant} consumer exited {child.returncode}")
            reports = [json.loads(f.read_text()) for f in result_files]
            state = self._group_state(stream, names) if stream else None
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        acked = sum(r["acked"] for r in reports)
        if variant == "e":
            drained = acked == expected and int(self.r.get(names["celery_done"]) or 0) == expected
            start = min(r.get("first_start") or t_go for r in reports)
        else:
            assert state is not None
            drained = acked == expected and state == (expected, 0)
            start = t_go
        last = max(r["last_ack"] for r in reports)
        elapsed = max(last - start, 1e-9)
        cpu_s = sum(r["cpu_s"] for r in reports)
        hits = sum(r.get("cache_hits", 0) for r in reports)
        misses = sum(r.get("cache_misses", 0) for r in reports)
        latencies: list[float] = []
        for f in result_files:
            lat_file = Path(str(f) + ".lat")
            if lat_file.exists():
                arr = array("d")
                arr.frombytes(lat_file.read_bytes())
                latencies.extend(arr)
        result = RunResult(
            variant=variant,
            name=VARIANTS[variant][0],
            events=expected,
            batch_size=batch_size,
            processes=processes,
            users=users,
            distinct_variants=dv,
            elapsed_s=elapsed,
            events_per_s=expected / elapsed,
            consumer_cpu_us_per_event=cpu_s / expected * 1e6,
            redis_cpu_us_per_event=(cpu1 - cpu0) / expected * 1e6,
            redis_round_trips_per_1k=sum(r["redis_round_trips"] for r in reports) / expected * 1e3,
            mongo_round_trips_per_1k=sum(r["mongo_round_trips"] for r in reports) / expected * 1e3,
            peak_rss_mb=max(r["max_rss_kb"] for r in reports) / 1024,
            acked=acked,
            drained_exactly=drained,
            cache_hit_ratio=hits / (hits + misses) if hits + misses else None,
            extra={k: v for r in reports for k, v in r.get("extra", {}).items()},
        )
        self.progress.done(
            f"{title}: {result.events_per_s:,.0f} events/s, {result.consumer_cpu_us_per_event:.1f}"
            f" µs CPU/event, Redis {result.redis_cpu_us_per_event:.1f} µs/event"
            + ("" if drained else "  ** NOT DRAINED EXACTLY **")
        )
        self._cleanup(names, stream)
        if stream and latency_rate is not None:
            self.r.unlink(stream)
        return result, latencies

    def _group_state(self, stream: str | None, names: dict[str, str]) -> tuple[int, int]:
        """(entries read by the group, entries pending)."""
        assert stream is not None
        for g in self.r.xinfo_groups(stream):
            if g["name"].decode() == names["group"]:
                return int(g.get("entries-read") or 0), int(g.get("pending") or 0)
        return 0, 0

    def _wait_drained(
        self,
        variant: str,
        stream: str | None,
        names: dict[str, str],
        expected: int,
        title: str,
        started: float,
        children: list[subprocess.Popen[str]],
        timeout_s: float = 1800,
    ) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if variant == "e":
                done = int(self.r.get(names["celery_done"]) or 0)
                finished = done >= expected
            else:
                read, pending = self._group_state(stream, names)
                done = read - pending
                finished = read >= expected and pending == 0
            if finished:
                cpu = redis_cpu_s(self.r)
                self.progress.bar(title, done, expected, started, force=True)
                return cpu
            for child in children:
                if child.poll() is not None:
                    raise RuntimeError(f"variant {variant} consumer died ({child.returncode})")
            self.progress.bar(title, done, expected, started)
            time.sleep(0.01)
        raise TimeoutError(f"variant {variant} did not drain in {timeout_s}s")

    def _celery_publish(
        self, app: Any, queue: str, events: int, users: int, dv: int, seed: int = 11
    ) -> None:
        from pomocore.workload import Workload

        workload = Workload(users=users, distinct_variants=dv, seed=seed)
        started = time.perf_counter()
        label = f"enqueue {events:,} Celery tasks"
        with app.producer_or_acquire() as producer:
            for i, fields in enumerate(workload.events(events), 1):
                app.send_task(
                    "pomobench.process_event",
                    args=[_jsonable(fields), time.time() * 1000],
                    queue=queue,
                    producer=producer,
                )
                if i % 500 == 0:
                    self.progress.bar(label, i, events, started)
        self.progress.done(f"{label}: {time.perf_counter() - started:.1f}s")

    def _publish_paced(
        self,
        variant: str,
        stream: str | None,
        names: dict[str, str],
        total: int,
        rate: float,
        users: int,
        dv: int,
        title: str,
    ) -> None:
        from pomocore.workload import Workload

        workload = Workload(users=users, distinct_variants=dv, seed=13)
        pending = [_flatten(f) if variant != "e" else _jsonable(f) for f in workload.events(total)]
        app = _celery_app(self.redis_url, names["celery_queue"]) if variant == "e" else None
        started = time.perf_counter()
        sent = 0
        producer_ctx = app.producer_or_acquire() if app is not None else contextlib.nullcontext()
        with producer_ctx as producer:
            while sent < total:
                due = min(total, int(rate * (time.perf_counter() - started)) + 1)
                if due > sent:
                    if app is not None:
                        for fields in pending[sent:due]:
                            app.send_task(
                                "pomobench.process_event",
                                args=[fields, time.time() * 1000],
                                queue=names["celery_queue"],
                                producer=producer,
                            )
                    else:
                        pipe = self.r.pipeline(transaction=False)
                        for flat in pending[sent:due]:
                            pipe.execute_command("XADD", stream, "*", *flat)  # type: ignore[no-untyped-call]
                        pipe.execute()
                    sent = due
                self.progress.bar(f"{title} @ {rate:,.0f}/s", sent, total, started)
                time.sleep(0.002)


def _flatten(fields: dict[str, str | bytes]) -> list[str | bytes]:
    flat: list[str | bytes] = []
    for k, v in fields.items():
        flat.append(k)
        flat.append(v)
    return flat


def _jsonable(fields: dict[str, str | bytes]) -> dict[str, str]:
    return {
        k: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
        for k, v in fields.items()
    }


def _spawn_child(spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pomocore.bench", "--child", json.dumps(spec)]
    if spec.get("profile") == "py-spy":
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [spy, "record", "-r", "500", "-f", "raw", "-o", spec["profile_file"], "--", *cmd]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )


def _expect(child: subprocess.Popen[str], word: str, timeout_s: float) -> None:
    assert child.stdout is not None
    result: list[str] = []

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == word:
                result.append(line)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout_s)
    if not result:
        child.kill()
        raise RuntimeError(f"consumer did not report {word} (exit {child.poll()})")


# --------------------------------------------------------------------------------------
# Child: one consumer process of one variant
# --------------------------------------------------------------------------------------


class Recorder:
    """What a consumer process reports: acks, last ack time, round trips, latencies."""

    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.acked = 0
        self.last_ack = 0.0
        self.first_start = 0.0
        self.redis_round_trips = 0
        self.mongo_round_trips = 0
        self.lat = array("d")
        self.extra: dict[str, Any] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    def acked_ids(self, ids: Sequence[bytes | str]) -> None:
        now = time.time()
        self.last_ack = now
        self.acked += len(ids)
        if self.latency:
            now_ms = now * 1000.0
            lat = self.lat
            for i in ids:
                s = i.decode() if isinstance(i, bytes) else i
                lat.append(now_ms - int(s.partition("-")[0]))

    def reset_counters(self) -> None:
        self.redis_round_trips = 0
        self.mongo_round_trips = 0


REC: Recorder | None = None


def _install_counters(rec: Recorder) -> None:
    """Count Redis round trips (one socket write = one request/pipeline) and MongoDB
    commands, for every client the process creates afterwards."""
    import redis.asyncio.connection as aconn
    import redis.connection as sconn
    from pymongo import monitoring

    a_send = aconn.AbstractConnection.send_packed_command

    async def counted_a(self: Any, command: Any, check_health: bool = True) -> None:
        rec.redis_round_trips += 1
        await a_send(self, command, check_health)

    s_send = sconn.AbstractConnection.send_packed_command

    def counted_s(self: Any, command: Any, check_health: bool = True) -> None:
        rec.redis_round_trips += 1
        s_send(self, command, check_health)  # type: ignore[no-untyped-call]

    aconn.AbstractConnection.send_packed_command = counted_a  # type: ignore[method-assign]
    sconn.AbstractConnection.send_packed_command = counted_s  # type: ignore[method-assign]

    class Listener(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            rec.mongo_round_trips += 1

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    monitoring.register(Listener())


def _peak_rss_kb() -> int:
    """Peak RSS of this process. Not ru_maxrss: on Linux that survives exec, so a child
    would report its parent's peak at fork time (here: the publisher's event lists)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child_main(spec: dict[str, Any]) -> int:
    import gc

    global REC
    rec = REC = Recorder(spec["latency"])
    _install_counters(rec)
    variant = spec["variant"]
    profiler = None
    if spec.get("profile") == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
    state: dict[str, Any] = {}
    if variant == "e":
        _child_celery(spec, rec, state)
    elif variant == "d":
        _child_naive(spec, rec, state, profiler)
    else:
        from pomocore.run import run_event_loop

        run_event_loop(_child_async(spec, rec, state, profiler))
    gc.collect()
    report = {
        "acked": rec.acked,
        "last_ack": rec.last_ack,
        "first_start": rec.first_start or state.get("t_go", 0.0),
        "cpu_s": state.get("cpu_s", 0.0),
        "redis_round_trips": rec.redis_round_trips,
        "mongo_round_trips": rec.mongo_round_trips,
        "max_rss_kb": _peak_rss_kb(),
        "cache_hits": rec.cache_hits,
        "cache_misses": rec.cache_misses,
        "extra": rec.extra,
    }
    Path(spec["result_file"]).write_text(json.dumps(report))
    if rec.latency:
        Path(spec["result_file"] + ".lat").write_bytes(rec.lat.tobytes())
    if profiler is not None:
        import io
        import pstats

        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf).sort_stats("tottime")
        stats.print_stats(45)
        buf.write("\n\n==== by cumulative time ====\n")
        stats.sort_stats("cumulative").print_stats(45)
        Path(spec["profile_file"]).write_text(buf.getvalue())
    return 0


def _ready_and_wait_go() -> float:
    print("READY", flush=True)
    line = sys.stdin.readline()
    if not line.startswith("GO"):
        raise SystemExit("no GO from the parent")
    return float(line.split()[1])


def void(_: object) -> None:
    return None


def _wait_stop_thread(on_stop: Callable[[], None]) -> threading.Thread:
    def wait() -> None:
        for line in sys.stdin:
            if line.strip() == "STOP":
                break
        on_stop()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    return t


async def _child_async(
    spec: dict[str, Any], rec: Recorder, state: dict[str, Any], profiler: Any
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    variant = spec["variant"]
    if variant in "bcg":
        runner = _pomocore_runner(spec, rec, state)
    elif variant == "a":
        runner = _ceiling_runner(spec, rec, state)
    elif variant == "f":
        runner = _plain_runner(spec, rec, state)
    else:  # pragma: no cover
        raise SystemExit(f"unknown variant {variant}")
    async with runner as run:
        t_go = await loop.run_in_executor(None, _ready_and_wait_go)
        state["t_go"] = t_go
        rec.reset_counters()
        _wait_stop_thread(lambda: void(loop.call_soon_threadsafe(stop.set)))
        cpu0 = _cpu_s()
        if profiler is not None:
            profiler.enable()
        await run(stop)
        if profiler is not None:
            profiler.disable()
        state["cpu_s"] = _cpu_s() - cpu0


def _redis_async(spec: dict[str, Any]) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(spec["redis_url"], decode_responses=False)


def _read_args(spec: dict[str, Any]) -> tuple[str, str, str, int]:
    """(stream, group, consumer, COUNT) of a variant's consumer."""
    return spec["stream"], spec["group"], spec["consumer"], spec["batch_size"]


@contextlib.asynccontextmanager
async def _ceiling_runner(spec: dict[str, Any], rec: Recorder, state: dict[str, Any]) -> Any:
    r = _redis_async(spec)
    await r.ping()
    stream, group, consumer, count = _read_args(spec)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply = await r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=100)
            if not reply:
                continue
            ids = [entry_id for entry_id, _fields in reply[0][1]]
            await r.xack(stream, group, *ids)
            rec.acked_ids(ids)

    try:
        yield run
    finally:
        await r.aclose()


PLAIN_SCRIPT = """
local n = tonumber(ARGV[2])
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3, 2 + n))
local pos = 3 + n
for k = 2, #KEYS do
  local pairs_n = tonumber(ARGV[pos]); pos = pos + 1
  for _ = 1, pairs_n do
    redis.call('ZINCRBY', KEYS[k], ARGV[pos + 1], ARGV[pos])
    pos = pos + 2
  end
end
return acked
"""


class DictClassifier:
    """Classify by dict: (app, url, title) → category, the pattern engine on a miss."""

    def __init__(self, rec: Recorder) -> None:
        from pomocore.classifiers.engine import Classifier
        from pomocore.classifiers.patterns import load_default_pattern_set

        self.engine = Classifier.from_patterns(load_default_pattern_set())
        self.memo: dict[tuple[str, str, str], str] = {}
        self.rec = rec

    def __call__(self, app: str, url: str, title: str) -> str:
        key = (app, url, title)
        category = self.memo.get(key)
        if category is None:
            self.rec.cache_misses += 1
            category = self.memo[key] = self.engine.classify(app, url, title).category
        else:
            self.rec.cache_hits += 1
        return category


def _leaderboard_keys(spec: dict[str, Any]) -> Callable[[str, float], tuple[str, ...]]:
    from pomocore.core.categories import WORK, WORK_CATEGORIES
    from pomocore.core.periods import PeriodCalculator

    periods = PeriodCalculator("Asia/Seoul")
    prefix = spec["leaderboard_prefix"]
    cache: dict[tuple[str, str], tuple[str, ...]] = {}

    def keys(category: str, ts: float) -> tuple[str, ...]:
        p = periods(ts)
        k = cache.get((category, p.daily))
        if k is None:
            cats = (category, WORK) if category in WORK_CATEGORIES else (category,)
            k = cache[(category, p.daily)] = tuple(
                f"{prefix}:{c}:{label}" for c in cats for label in p.labels()
            )
        return k

    return keys


def _plain_event(fields: dict[bytes, bytes]) -> tuple[str, str, str, str, float, float] | None:
    """Minimal parse, no validation beyond what cannot be used at all."""
    try:
        ev = (
            fields[b"userId"].decode(),
            fields.get(b"app", b"").decode(),
            fields.get(b"url", b"").decode(),
            fields.get(b"title", b"").decode(),
            float(fields[b"duration"]),
            float(fields[b"timestamp"]),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    # what Redis itself would refuse (ZINCRBY nan) or the leaderboard must never get
    return ev if ev[0] and 0.0 < ev[4] < math.inf and math.isfinite(ev[5]) else None


@contextlib.asynccontextmanager
async def _plain_runner(spec: dict[str, Any], rec: Recorder, state: dict[str, Any]) -> Any:
    r = _redis_async(spec)
    script = r.register_script(PLAIN_SCRIPT)
    await r.script_load(PLAIN_SCRIPT)
    classify = DictClassifier(rec)
    keys_of = _leaderboard_keys(spec)
    stream, group, consumer, count = _read_args(spec)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply = await r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=100)
            if not reply:
                continue
            messages = reply[0][1]
            ids = []
            sums: defaultdict[str, defaultdict[str, float]] = defaultdict(
                lambda: defaultdict(float)
            )
            for entry_id, fields in messages:
                ids.append(entry_id)
                ev = _plain_event(fields)
                if ev is None:
                    continue
                user, app, url, title, duration, ts = ev
                for key in keys_of(classify(app, url, title), ts):
                    sums[key][user] += duration
            argv: list[Any] = [group, len(ids), *ids]
            for users in sums.values():
                argv.append(len(users))
                for user, amount in users.items():
                    argv.append(user)
                    argv.append(repr(amount))
            await script(keys=[stream, *sums], args=argv)
            rec.acked_ids(ids)

    try:
        yield run
    finally:
        await r.aclose()


@contextlib.asynccontextmanager
async def _pomocore_runner(spec: dict[str, Any], rec: Recorder, state: dict[str, Any]) -> Any:
    from pomocore.consumers.app import run_until_stopped, runtime
    from pomocore.core.logs import setup_logging
    from pomocore.core.settings import Settings

    sinks = ("mongo", "leaderboard") if spec["variant"] == "b" else ("leaderboard",)
    settings = Settings.from_dsn(
        spec["redis_url"],
        spec["mongo_uri"] or None,
        stream=spec["stream"],
        group=spec["group"],
        consumer_name=spec["consumer"],
        dead_letter_stream=spec["dead_letter_stream"],
        session_score_stream=spec["session_score_stream"],
        leaderboard_prefix=spec["leaderboard_prefix"],
        mongo_db=spec["mongo_db"],
        sinks=sinks,
        batch_size=spec["batch_size"],
        block_ms=100,
        leaderboard_mode="derived" if spec["variant"] == "g" else "exact",
        derived_refresh_s=1.0,  # several refreshes inside a run: their Redis CPU is counted
        log_format="text",
        log_level="WARNING",
    )
    setup_logging(settings.log_format, settings.log_level)
    from pomocore.core.observer import Observer

    class AckRecorder(Observer):
        def batch_committed(self, outcome: Any, elapsed_s: float, entries: Sequence[Any]) -> None:
            rec.acked_ids([e[0] for e in entries])

    async with runtime(settings, AckRecorder()) as rt:
        await rt.redis.ping()

        async def run(stop: asyncio.Event) -> None:
            await run_until_stopped(rt, stop)
            stats = rt.consumer.stats
            # acknowledged by this consumer = committed + already acknowledged by another
            rec.extra["pomocore_stats"] = {
                "committed": stats.committed,
                "skipped_already_acked": stats.skipped_already_acked,
                "batches": stats.batches,
                "rejected": sum(stats.rejected_by_reason.values()),
                "sink_failures": stats.sink_failures,
            }
            rec.acked = stats.committed + stats.skipped_already_acked
            rec.cache_hits = getattr(rt.classifier, "hits", 0)
            rec.cache_misses = getattr(rt.classifier, "misses", 0)
            mongo = getattr(rt.consumer.processor, "mongo", None)
            if mongo is not None:
                rec.extra["mongo_sink_round_trips"] = mongo.round_trips

        yield run


def _child_naive(spec: dict[str, Any], rec: Recorder, state: dict[str, Any], profiler: Any) -> None:
    """The per-message pipeline the old service started from (sync clients: the faster
    stack for one-command-at-a-time work, so this baseline is not a straw man)."""
    import redis
    from pymongo import ASCENDING, MongoClient

    r = redis.Redis.from_url(spec["redis_url"])
    client: Any = MongoClient(spec["mongo_uri"], serverSelectionTimeoutMS=5000)
    db = client[spec["mongo_db"]]
    with contextlib.suppress(Exception):
        db["categorized_data"].create_index(
            [("app", ASCENDING), ("url", ASCENDING), ("title", ASCENDING)]
        )
    from pomocore.classifiers.engine import Classifier
    from pomocore.classifiers.patterns import load_default_pattern_set

    engine = Classifier.from_patterns(load_default_pattern_set())
    keys_of = _leaderboard_keys(spec)
    stream, group, consumer, count = _read_args(spec)
    r.ping()
    stop = threading.Event()
    state["t_go"] = _ready_and_wait_go()
    rec.reset_counters()
    _wait_stop_thread(stop.set)
    cpu0 = _cpu_s()
    if profiler is not None:
        profiler.enable()
    while not stop.is_set():
        reply: Any = r.xreadgroup(group, consumer, {stream: ">"}, count=min(count, 100), block=100)
        if not reply:
            continue
        for entry_id, fields in reply[0][1]:
            ev = _plain_event(fields)
            if ev is not None:
                user, app, url, title, duration, ts = ev
                doc = db["categorized_data"].find_one({"app": app, "url": url, "title": title})
                if doc is None:
                    decision = engine.classify(app, url, title)
                    category = decision.category
                    res = db["categorized_data"].insert_one(
                        {
                            "app": app,
                            "url": url,
                            "title": title,
                            "category": category,
                            "isLLMBased": False,
                        }
                    )
                    cat_id = res.inserted_id
                    rec.cache_misses += 1
                else:
                    category, cat_id = doc["category"], doc["_id"]
                    rec.cache_hits += 1
                db["pomodoro_usage_log"].insert_one(
                    {
                        "userId": user,
                        "categorizedDataId": cat_id,
                        "category": category,
                        "timestamp": ts,
                        "duration": duration,
                    }
                )
                for key in keys_of(category, ts):
                    r.zincrby(key, duration, user)
            r.xack(stream, group, entry_id)
            rec.acked_ids([entry_id])
    if profiler is not None:
        profiler.disable()
    state["cpu_s"] = _cpu_s() - cpu0
    client.close()
    r.close()


def _celery_app(redis_url: str, queue: str) -> Any:
    from celery import Celery  # type: ignore[import-untyped]

    app = Celery("pomobench", broker=redis_url)
    app.conf.update(
        # every kombu key (queue, bindings, unacked sets) under the run's prefix
        broker_transport_options={"global_keyprefix": queue + ":"},
        worker_enable_remote_control=False,
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def _child_celery(spec: dict[str, Any], rec: Recorder, state: dict[str, Any]) -> None:
    import warnings

    import redis

    warnings.filterwarnings("ignore", message=".*superuser privileges.*")

    app = _celery_app(spec["redis_url"], spec["celery_queue"])
    r = redis.Redis.from_url(spec["redis_url"])
    classify = DictClassifier(rec)
    keys_of = _leaderboard_keys(spec)
    done_key = spec["celery_done"]
    latency = spec["latency"]

    @app.task(name="pomobench.process_event", ignore_result=True)  # type: ignore[untyped-decorator]
    def process_event(fields: dict[str, str], enqueued_ms: float) -> None:
        if not rec.first_start:
            rec.first_start = time.time()
            state["cpu0"] = _cpu_s()
        pipe = r.pipeline(transaction=False)
        try:
            user = fields["userId"]
            duration, ts = float(fields["duration"]), float(fields["timestamp"])
            if user and math.isfinite(duration) and 0 < duration <= 86400 and math.isfinite(ts):
                category = classify(
                    fields.get("app", ""), fields.get("url", ""), fields.get("title", "")
                )
                for key in keys_of(category, ts):
                    pipe.zincrby(key, duration, user)
        except (KeyError, ValueError):
            pass
        pipe.incr(done_key)
        pipe.execute()
        now = time.time()
        rec.acked += 1
        rec.last_ack = now
        state["cpu1"] = _cpu_s()
        if latency:
            rec.lat.append(now * 1000 - enqueued_ms)

    r.ping()
    state["t_go"] = _ready_and_wait_go()
    rec.reset_counters()
    _wait_stop_thread(lambda: os.kill(os.getpid(), signal.SIGTERM))
    worker = app.Worker(
        pool_cls="solo",
        concurrency=1,
        loglevel="WARNING",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
        queues=[spec["celery_queue"]],
    )
    with contextlib.suppress(SystemExit):
        worker.start()
    state["cpu_s"] = state.get("cpu1", 0.0) - state.get("cpu0", 0.0)
    r.close()


# --------------------------------------------------------------------------------------
# Session: main table, latency pass, sweeps, output
# --------------------------------------------------------------------------------------


def run_bench(o: BenchOptions) -> dict[str, Any]:
    o.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(o)
    out: dict[str, Any] = {}
    try:
        machine = bench.machine()
        bench.progress.say(
            f"pomocore bench: {machine['nproc']} CPUs ({machine['cpu_model']}), "
            f"{machine['redis_server']}, MongoDB {machine['mongo']}"
        )
        main: dict[str, list[RunResult]] = {}
        # Round robin (run 1 of every variant, then run 2, ...): the speed of a shared
        # machine drifts over minutes, and the ratios between variants (c / bound(f)) should
        # not depend on which variant ran in a fast stretch.
        for i in range(o.runs):
            for v in o.variants:
                n = _events_for(o, v)
                res, _ = bench.run_variant(
                    v,
                    events=n,
                    batch_size=o.batch_size,
                    processes=o.processes,
                    label=f"{v} {VARIANTS[v][0]} run {i + 1}/{o.runs}",
                )
                main.setdefault(v, []).append(res)
        latencies: dict[str, LatencyResult] = {}
        if o.latency:
            for v in o.variants:
                rate = 0.5 * _median([r.events_per_s for r in main[v]])
                n = _events_for(o, v)
                res, lat = bench.run_variant(
                    v,
                    events=n,
                    batch_size=o.batch_size,
                    processes=o.processes,
                    latency_rate=rate,
                    label=f"{v} {VARIANTS[v][0]} latency",
                )
                lat.sort()
                latencies[v] = LatencyResult(
                    variant=v,
                    rate=rate,
                    events=len(lat),
                    p50_ms=_percentile(lat, 0.50),
                    p95_ms=_percentile(lat, 0.95),
                    p99_ms=_percentile(lat, 0.99),
                    max_ms=lat[-1] if lat else math.nan,
                    cdf=_cdf(lat),
                )
        profile_run = None
        if o.profile:
            profile_run, _ = bench.run_variant(
                "c",
                events=o.events,
                batch_size=o.batch_size,
                profile=o.profile,
                label=f"c pomocore-lb under {o.profile}",
            )
        sweeps: dict[str, list[dict[str, Any]]] = {}
        for sweep in o.sweeps:
            sweeps[sweep] = [asdict(r) for r in _run_sweep(bench, o, sweep)]
        out = {
            "session": bench.session,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(["pomocore", "bench", *sys.argv[2:]])
            if sys.argv[1:2] == ["bench"]
            else "",
            "machine": machine,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()},
            "summary": _summary(main, latencies),
            "runs": {v: [asdict(r) for r in rs] for v, rs in main.items()},
            "latency": {v: asdict(lr) for v, lr in latencies.items()},
            "sweeps": sweeps,
            "process_scaling": process_scaling(sweeps.get("processes", []), machine["nproc"] or 1),
            "profile_run": asdict(profile_run) if profile_run else None,
            "loadavg_at_end": os.getloadavg(),
        }
    finally:
        bench.close()
    print_table(out)
    o.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = o.out / f"bench-{stamp}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    (o.out / "latest.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"\nresults: {path}")
    if o.plots:
        for p in write_plots(out, o.out):
            print(f"plot:    {p}")
    return out


def _events_for(o: BenchOptions, variant: str) -> int:
    if variant in SLOW_VARIANTS:
        return min(o.slow_events, o.events)
    if variant == "b":
        return min(o.mongo_events, o.events)
    return o.events


def _cdf(sorted_lat: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    if not sorted_lat:
        return []
    n = len(sorted_lat)
    qs = sorted({min(n - 1, int(n * i / points)) for i in range(points)} | {n - 1})
    return [(round(float(sorted_lat[k]), 3), round((k + 1) / n, 5)) for k in qs]


def _run_sweep(bench: Bench, o: BenchOptions, sweep: str) -> list[RunResult]:
    results: list[RunResult] = []
    n = o.sweep_events or max(1000, o.events // 2)
    variants = [v for v in SWEEP_VARIANTS[sweep] if v in o.variants] or list(SWEEP_VARIANTS[sweep])
    for value in SWEEP_VALUES[sweep]:
        for v in variants:
            kw: dict[str, Any] = {"events": n, "batch_size": o.batch_size}
            if sweep == "batch":
                kw["batch_size"] = value
            elif sweep == "processes":
                kw["processes"] = value
            elif sweep == "users":
                kw["users"] = value
            elif sweep == "hit":
                kw["distinct_variants"] = value
            elif sweep == "rss":
                kw["events"] = value
                kw["distinct_variants"] = 1_000_000
                if o.events < 100_000:  # --quick: the same shape, 10× smaller
                    kw["events"] = value // 10
            runs = []
            for _ in range(max(1, o.runs if sweep in ("processes",) else 1)):
                res, _lat = bench.run_variant(v, label=f"sweep {sweep}={value:,} {v}", **kw)
                runs.append(res)
            best = sorted(runs, key=lambda r: r.events_per_s)[len(runs) // 2]
            best.extra["sweep"] = {
                "name": sweep,
                "value": value,
                "runs_events_per_s": [r.events_per_s for r in runs],
            }
            results.append(best)
        # a new stream per shape: drop the previous one to keep Redis memory flat
        if sweep in ("users", "hit", "rss"):
            for shape, key in list(bench.streams.items()):
                bench.r.unlink(key)
                del bench.streams[shape]
    return results


def scaling_ceiling(
    consumer_us: float, redis_us: float, processes: int, cores: int
) -> tuple[float, str]:
    """The most events/s `processes` consumer processes can reach, from CPU per event alone
    (measured with one process), and what sets it: "consumers" (each process is one
    Python thread), "redis" (one core for Redis), or "cores" (consumers and Redis on the
    same `cores`). Latency-bound setups stay below it."""
    limits = {
        "consumers": processes * 1e6 / consumer_us if consumer_us > 0 else math.inf,
        "redis": 1e6 / redis_us if redis_us > 0 else math.inf,
        "cores": cores * 1e6 / (consumer_us + redis_us) if consumer_us + redis_us > 0 else math.inf,
    }
    limit = min(limits, key=lambda name: limits[name])
    return limits[limit], limit


def process_scaling(rows: Sequence[dict[str, Any]], cores: int) -> dict[str, dict[str, Any]]:
    """Per variant of a processes sweep: measured events/s with N processes over one
    process, beside the CPU ceiling of that ratio (scaling_ceiling of the one-process run)."""
    by_variant: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_variant[r["variant"]][int(r["extra"]["sweep"]["value"])] = r
    out: dict[str, dict[str, Any]] = {}
    for variant, runs in by_variant.items():
        one = runs.get(1)
        if one is None or one["events_per_s"] <= 0:
            continue
        cons, red = one["consumer_cpu_us_per_event"], one["redis_cpu_us_per_event"]
        points = {}
        for n, r in sorted(runs.items()):
            ceiling, limit = scaling_ceiling(cons, red, n, cores)
            points[n] = {
                "ratio": r["events_per_s"] / one["events_per_s"],
                "ceiling_ratio": ceiling / one["events_per_s"],
                "limited_by": limit,
            }
        out[variant] = {
            "redis_busy_one_process": one["events_per_s"] * red / 1e6,
            "points": points,
        }
    return out


def _summary(
    main: dict[str, list[RunResult]], latencies: dict[str, LatencyResult]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for v, runs in main.items():
        eps = [r.events_per_s for r in runs]
        row: dict[str, Any] = {
            "name": VARIANTS[v][0],
            "description": VARIANTS[v][1],
            "events": runs[0].events,
            "runs": len(runs),
            "events_per_s_median": _median(eps),
            "events_per_s_min": min(eps),
            "events_per_s_max": max(eps),
        }
        for attr in (
            "consumer_cpu_us_per_event",
            "redis_cpu_us_per_event",
            "redis_round_trips_per_1k",
            "mongo_round_trips_per_1k",
            "peak_rss_mb",
        ):
            row[attr] = _median([getattr(r, attr) for r in runs])
        hit = [r.cache_hit_ratio for r in runs if r.cache_hit_ratio is not None]
        row["cache_hit_ratio"] = _median(hit) if hit else None
        row["drained_exactly"] = all(r.drained_exactly for r in runs)
        redis_us = row["redis_cpu_us_per_event"]
        row["redis_bound_events_per_s"] = 1e6 / redis_us if redis_us > 0 else math.inf
        lat = latencies.get(v)
        if lat:
            row.update(
                {
                    "latency_rate": lat.rate,
                    "p50_ms": lat.p50_ms,
                    "p95_ms": lat.p95_ms,
                    "p99_ms": lat.p99_ms,
                }
            )
        out[v] = row
    a = out.get("a", {}).get("events_per_s_median")
    f = out.get("f", {})
    for row in out.values():
        row["ratio_to_a"] = row["events_per_s_median"] / a if a else None
        row["ratio_to_f_bound"] = (
            row["events_per_s_median"] / f["redis_bound_events_per_s"] if f else None
        )
        row["ratio_to_f"] = row["events_per_s_median"] / f["events_per_s_median"] if f else None
    c = out.get("c")
    if c:
        targets = {}
        if f:
            targets["c / bound(f) >= 0.9"] = c["ratio_to_f_bound"]
            targets["c / f >= 1.5"] = c["ratio_to_f"]
        for v, need in (("d", 50), ("e", 30)):
            if v in out:
                targets[f"c / {v} >= {need}"] = (
                    c["events_per_s_median"] / out[v]["events_per_s_median"]
                )
        if "b" in out:
            targets["b mongo round trips / 1k <= 3"] = out["b"]["mongo_round_trips_per_1k"]
        if "p99_ms" in c:
            targets["c p99 ms at half max <= 250"] = c["p99_ms"]
        c["targets"] = targets
    return out


def _fmt(x: Any, spec: str = ",.0f") -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "–"
    return format(x, spec)


def print_table(out: dict[str, Any]) -> None:
    summary = out.get("summary", {})
    if not summary:
        return
    m = out["machine"]
    print(
        f"\nMachine: {m['nproc']} CPUs, {m['cpu_model']}; {m['redis_server']}; Python {m['python']}"
    )
    head = (
        f"{'variant':<15}{'events':>8}{'events/s (min–max)':>28}{'×a':>6}{'×bnd(f)':>8}"
        f"{'cons µs/ev':>11}{'Redis µs/ev':>12}{'bound/s':>9}{'p50':>7}{'p95':>7}{'p99':>7}"
        f"{'Redis rt/1k':>12}{'Mongo rt/1k':>12}{'RSS MB':>8}{'hit':>6}{'exact':>6}"
    )
    print(head)
    print("─" * len(head))
    for v, row in summary.items():
        lo, hi = _fmt(row["events_per_s_min"]), _fmt(row["events_per_s_max"])
        rng = f"{_fmt(row['events_per_s_median'])} ({lo}–{hi})"
        print(
            f"{v + ' ' + row['name']:<15}{row['events']:>8,}{rng:>28}"
            f"{_fmt(row['ratio_to_a'], '.3f'):>6}{_fmt(row['ratio_to_f_bound'], '.2f'):>8}"
            f"{_fmt(row['consumer_cpu_us_per_event'], '.1f'):>11}"
            f"{_fmt(row['redis_cpu_us_per_event'], '.1f'):>12}"
            f"{_fmt(row['redis_bound_events_per_s']):>9}"
            f"{_fmt(row.get('p50_ms'), '.1f'):>7}{_fmt(row.get('p95_ms'), '.1f'):>7}"
            f"{_fmt(row.get('p99_ms'), '.1f'):>7}"
            f"{_fmt(row['redis_round_trips_per_1k'], '.1f'):>12}"
            f"{_fmt(row['mongo_round_trips_per_1k'], '.2f'):>12}"
            f"{_fmt(row['peak_rss_mb'], '.0f'):>8}{_fmt(row['cache_hit_ratio'], '.2f'):>6}"
            f"{'yes' if row['drained_exactly'] else 'NO':>6}"
        )
    print("latency p50/p95/p99 in ms, measured at half of each variant's median throughput")
    c = summary.get("c", {})
    for name, value in c.get("targets", {}).items():
        print(f"  target {name:<36} {_fmt(value, '.2f')}")
    for sweep, rows in out.get("sweeps", {}).items():
        print(f"\nsweep {sweep}")
        for r in rows:
            value = r["extra"]["sweep"]["value"]
            hit = r.get("cache_hit_ratio")
            print(
                f"  {sweep}={value:>9,} {r['variant']} {r['name']:<12} {r['events_per_s']:>9,.0f}/s"
                f"  cons {r['consumer_cpu_us_per_event']:6.1f} µs/ev  Redis"
                f" {r['redis_cpu_us_per_event']:6.1f} µs/ev  RSS {r['peak_rss_mb']:6.0f} MB"
                + (f"  hit {hit:.2f}" if hit is not None else "")
                + ("" if r["drained_exactly"] else "  NOT EXACT")
            )
    for variant, scaling in out.get("process_scaling", {}).items():
        busy = scaling["redis_busy_one_process"]
        print(f"  processes, {variant}: Redis {busy:.0%} busy with one process")
        for n, point in scaling["points"].items():
            print(
                f"    {n} vs 1: {point['ratio']:.2f}x measured, CPU ceiling"
                f" {point['ceiling_ratio']:.2f}x (set by {point['limited_by']})"
            )


def write_plots(out: dict[str, Any], directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[dev]')")
        return []
    written: list[Path] = []
    sweeps = out.get("sweeps", {})
    for sweep, xlabel, fname, logx in (
        ("batch", "batch size (XREADGROUP COUNT)", "throughput_vs_batch.png", True),
        ("processes", "consumer processes", "scaling_vs_processes.png", False),
        ("users", "distinct users", "throughput_vs_users.png", True),
        ("hit", "distinct keys per template", "throughput_vs_keys.png", True),
    ):
        rows = sweeps.get(sweep)
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        by_v: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            by_v[r["variant"]].append((r["extra"]["sweep"]["value"], r["events_per_s"]))
        for v, pts in sorted(by_v.items()):
            pts.sort()
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{v} {VARIANTS[v][0]}"
            )
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("events/s")
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_title(f"pomocore bench: {sweep} sweep ({out['machine']['nproc']} CPUs)")
        fig.tight_layout()
        path = directory / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    lat = out.get("latency", {})
    if lat:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for v, lr in sorted(lat.items()):
            if lr["cdf"]:
                ax.plot(
                    [p[0] for p in lr["cdf"]],
                    [p[1] for p in lr["cdf"]],
                    label=f"{v} {VARIANTS[v][0]} @ {lr['rate']:,.0f}/s",
                )
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency, ms (stream entry → acknowledgement)")
        ax.set_ylabel("fraction of events")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("latency CDF at half of each variant's max throughput")
        fig.tight_layout()
        path = directory / "latency_cdf.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    summary = out.get("summary", {})
    if summary:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        vs = list(summary)
        ax.bar(
            [f"{v}\n{summary[v]['name']}" for v in vs],
            [summary[v]["events_per_s_median"] for v in vs],
        )
        ax.set_yscale("log")
        ax.set_ylabel("events/s (median)")
        ax.set_title("throughput by variant")
        fig.tight_layout()
        path = directory / "throughput_by_variant.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes, one run (about a minute)")
    p.add_argument("--events", type=int, help="events per run for a, b, c, f (default 200000)")
    p.add_argument("--slow-events", type=int, help="events per run for d, e (default 5000)")
    p.add_argument(
        "--mongo-events", type=int, help="events per run for b, bounded by MongoDB (default 50000)"
    )
    p.add_argument("--runs", type=int, help="runs per variant (median, min, max; default 3)")
    p.add_argument("--variants", default="a,b,c,d,e,f,g", help="comma list from a,b,c,d,e,f,g")
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        help=f"repeatable/comma list: {','.join(SWEEPS)} or all",
    )
    p.add_argument("--sweep-events", type=int, default=0, help="events per sweep run")
    p.add_argument("--batch-size", type=int, default=1000, help="COUNT / POMOCORE_BATCH_SIZE")
    p.add_argument("--processes", type=int, default=1, help="consumer processes per variant")
    p.add_argument("--users", type=int, default=3000, help="distinct users in the workload")
    p.add_argument(
        "--keys-per-template",
        type=int,
        default=200,
        help="workload distinct_variants (distinct (app,url,title) per template)",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the latency pass")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--profile",
        choices=("cprofile", "py-spy"),
        default="",
        help="also run variant c once under a profiler (output in --out)",
    )
    p.add_argument("--out", default="benchmarks/results", help="directory for JSON and PNGs")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    variants = "".join(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {','.join(sorted(unknown))}")
    sweeps: list[str] = []
    for s in args.sweep:
        for name in s.split(","):
            name = name.strip()
            if name == "all":
                sweeps.extend(x for x in SWEEPS if x != "rss")
            elif name in SWEEPS:
                sweeps.append(name)
            elif name:
                raise SystemExit(f"unknown sweep {name!r}: choose from {','.join(SWEEPS)}")
    o = BenchOptions(
        variants=variants,
        sweeps=tuple(dict.fromkeys(sweeps)),
        batch_size=args.batch_size,
        processes=args.processes,
        users=args.users,
        distinct_variants=args.keys_per_template,
        latency=not args.no_latency,
        out=Path(args.out),
        plots=not args.no_plots,
        sweep_events=args.sweep_events,
        profile=args.profile,
    )
    if args.quick:
        o.events, o.slow_events, o.mongo_events = 20_000, 1_000, 5_000
        o.runs, o.latency_seconds = 1, 3.0
    if args.events is not None:
        o.events = args.events
    if args.slow_events is not None:
        o.slow_events = args.slow_events
    if args.mongo_events is not None:
        o.mongo_events = args.mongo_events
    if args.runs is not None:
        o.runs = args.runs
    return o


def cmd_bench(args: argparse.Namespace) -> int:
    run_bench(options_from_args(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child_main(json.loads(argv[1]))
    parser = argparse.ArgumentParser(
        prog="pomocore bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return cmd_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
