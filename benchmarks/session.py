"""Orchestration of a benchmark session: servers, published streams, runs, sweeps.

The workload (pomocore.workload, the generator `pomocore demo` uses) is published once per
(size, users, distinct keys); every run reads it through a fresh consumer group created at
id 0, so all variants read identical entries. The consumer processes start, build
everything, report READY; the parent snapshots Redis `INFO cpu` and says GO; each process
records the wall time of its last acknowledgement; the parent polls the group until
`entries-read` = N and nothing is pending, then stops the consumers, checks that exactly N
entries were acknowledged, and deletes what the run wrote (leaderboard keys, dead letters,
session scores, the group, the MongoDB database).

Servers: an EmbeddedRedis (and EmbeddedMongo for b, d) on free ports, or the servers in
POMOCORE_REDIS_URL / POMOCORE_MONGO_URI; every key, group and database then carries a
unique `pomobench-<id>` prefix and only those are deleted. Nothing is ever flushed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import redis
from pymongo import MongoClient

from benchmarks import protocol
from benchmarks.llm_path import run_llm_path
from benchmarks.measure import median, redis_cpu_s
from benchmarks.options import (
    MONGO_VARIANTS,
    OWN_FLOW_VARIANTS,
    SWEEP_VALUES,
    SWEEP_VARIANTS,
    VARIANTS,
    BenchOptions,
    Feed,
    RunShape,
)
from benchmarks.plots import write_plots
from benchmarks.protocol import ChildReport, ChildSpec, RunNames
from benchmarks.report import (
    LatencyResult,
    Progress,
    RunResult,
    print_table,
    process_scaling,
    summary,
    write_results,
)
from benchmarks.variants import celery_app
from pomocore.core.keys import KeySpace
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from pomocore.workload import Workload

PUBLISH_CHUNK = 2000


@dataclass
class Drained:
    """What the parent observed of one run, besides the children's reports."""

    t_go: float
    cpu0: float
    cpu1: float
    expected: int
    group_state: tuple[int, int] | None  # (entries read, pending) at the end


class Bench:
    """One benchmark session: servers, published streams, runs."""

    def __init__(self, options: BenchOptions) -> None:
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
        self._run_no = 0
        self._owned_keys: set[str] = set()

    # --- servers ---

    def _servers(self) -> tuple[str, str, bool]:
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
        info: dict[str, Any] = self.r.info("server")
        version = info.get("valkey_version") or info.get("redis_version")
        return {
            "nproc": os.cpu_count(),
            "cpu_model": _cpu_model(),
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

    def drop_streams(self) -> None:
        """Delete the published streams (a sweep over shapes keeps Redis memory flat)."""
        for shape, key in list(self.streams.items()):
            self.r.unlink(key)
            del self.streams[shape]

    def _celery_publish(self, app: Any, queue: str, events: int, users: int, dv: int) -> None:
        workload = Workload(users=users, distinct_variants=dv, seed=11)
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
        names: RunNames,
        total: int,
        rate: float,
        events: Iterable[dict[str, str | bytes]],
        title: str,
    ) -> None:
        """Publish `total` of `events` at `rate` per second while the consumers run."""
        celery = variant == "e"
        pending = [_jsonable(f) if celery else _flatten(f) for f in itertools.islice(events, total)]
        app = celery_app(self.redis_url, names.celery_queue) if celery else None
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
                                queue=names.celery_queue,
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

    def _paced_events(self, shape: RunShape, n: int) -> Iterator[dict[str, str | bytes]]:
        users = shape.users or self.o.users
        dv = shape.distinct_variants or self.o.distinct_variants
        return Workload(users=users, distinct_variants=dv, seed=13).events(n)

    # --- one run ---

    def new_names(self, variant: str) -> RunNames:
        self._run_no += 1
        return RunNames.for_run(
            self.prefix, self.session, self._run_no, uses_mongo=variant in MONGO_VARIANTS
        )

    def cleanup(self, names: RunNames, stream: str | None) -> None:
        if stream:
            with contextlib.suppress(Exception):
                self.r.xgroup_destroy(stream, names.group)
        self.unlink_matching(f"{names.leaderboard_prefix}:*")
        derived = KeySpace(leaderboard_prefix=names.leaderboard_prefix)  # variant g
        self.r.unlink(
            names.dead_letter_stream,
            names.session_score_stream,
            names.celery_queue,
            names.celery_done,
            derived.derived_stale_key,
            derived.derived_refreshing_key,
            derived.derived_lock_key,
            derived.derived_last_refresh_key,
        )
        for key in self.r.scan_iter(match=f"{self.prefix}r{names.run}:*", count=5000):
            self.r.unlink(key)
        if self.mongo_uri and names.uses_mongo:
            with contextlib.suppress(Exception):
                client: MongoClient[dict[str, Any]] = MongoClient(
                    self.mongo_uri, serverSelectionTimeoutMS=5000
                )
                client.drop_database(names.mongo_db)
                client.close()

    def unlink_matching(self, pattern: str) -> None:
        batch: list[bytes] = []
        for key in self.r.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 1000:
                self.r.unlink(*batch)
                batch.clear()
        if batch:
            self.r.unlink(*batch)

    def _run_stream(self, variant: str, shape: RunShape, names: RunNames) -> tuple[str | None, int]:
        """(the stream the run reads, the events it must drain), the group created."""
        users = shape.users or self.o.users
        dv = shape.distinct_variants or self.o.distinct_variants
        if variant == "e":
            if shape.latency_rate is None:
                app = celery_app(self.redis_url, names.celery_queue)
                self._celery_publish(app, names.celery_queue, shape.events, users, dv)
            return None, shape.events
        if shape.latency_rate is None:
            stream = self.stream(shape.events, users, dv)
            self.r.xgroup_create(stream, names.group, id="0")
            return stream, shape.events
        # latency pass: a fresh, empty stream filled while the consumers run
        stream = f"{self.prefix}r{names.run}:live"
        self.r.xgroup_create(stream, names.group, id="0", mkstream=True)
        expected = max(1000, int(shape.latency_rate * self.o.latency_seconds))
        return stream, min(shape.events, expected)

    def _specs(self, variant: str, shape: RunShape, names: RunNames, feed: Feed) -> list[ChildSpec]:
        suffix = "txt" if shape.profile == "cprofile" else "collapsed"
        profile_file = str(self.o.out.resolve() / f"profile-{variant}.{suffix}")
        return [
            ChildSpec(
                variant=variant,
                redis_url=self.redis_url,
                mongo_uri=self.mongo_uri,
                stream=feed.stream_name or feed.stream,
                consumer=f"bench-{names.run}-{i}",
                batch_size=shape.batch_size,
                latency=shape.latency_rate is not None,
                result_file=str(self.workdir / f"r{names.run}-{i}.json"),
                profile=shape.profile if i == 0 else "",
                profile_file=profile_file,
                names=names,
            )
            for i in range(shape.processes)
        ]

    def run_variant(
        self, variant: str, shape: RunShape, label: str = ""
    ) -> tuple[RunResult, list[float]]:
        """One run of `variant`: its figures and, in a latency pass, per-event latencies."""
        names = self.new_names(variant)
        stream, expected = self._run_stream(variant, shape, names)
        title = label or f"{variant} {VARIANTS[variant][0]}"
        result, specs = self.run_on(variant, shape, names, Feed(stream, expected), title)
        latencies = [x for s in specs for x in protocol.read_latencies(Path(s.result_file))]
        self.cleanup(names, stream)
        if stream and shape.latency_rate is not None:
            self.r.unlink(stream)
        return result, latencies

    def run_on(
        self, variant: str, shape: RunShape, names: RunNames, feed: Feed, title: str
    ) -> tuple[RunResult, list[ChildSpec]]:
        """Run `variant`'s consumers on `feed` (its group created); nothing cleaned up.
        Returns the figures and the children's specs (their result files)."""
        specs = feed.specs(self._specs(variant, shape, names, feed))
        drained = self._drive(variant, shape, names, feed, specs, title)
        reports = [ChildReport.read(Path(s.result_file)) for s in specs]
        result = self._result(variant, shape, names, reports, drained)
        self.progress.done(
            f"{title}: {result.events_per_s:,.0f} events/s, {result.consumer_cpu_us_per_event:.1f}"
            f" µs CPU/event, Redis {result.redis_cpu_us_per_event:.1f} µs/event"
            + ("" if result.drained_exactly else "  ** NOT DRAINED EXACTLY **")
        )
        return result, specs

    def _drive(
        self,
        variant: str,
        shape: RunShape,
        names: RunNames,
        feed: Feed,
        specs: list[ChildSpec],
        title: str,
    ) -> Drained:
        """Start the consumers, say GO, wait until the run drained, stop them."""
        stream, expected = feed.stream, feed.expected
        with _children(specs) as children:
            for child in children:
                protocol.expect(child, "READY", 120)
            cpu0 = redis_cpu_s(self.r)
            t_go = time.time()
            protocol.go(children, t_go)
            started = time.perf_counter()
            if shape.latency_rate is not None:
                events = feed.paced or self._paced_events(shape, expected)
                rate = shape.latency_rate
                self._publish_paced(variant, stream, names, expected, rate, events, title)
            cpu1 = self._wait_drained(variant, stream, names, expected, title, started, children)
            protocol.stop(children)
            _wait_exited(variant, children)
            state = self._group_state(stream, names) if stream else None
        return Drained(t_go=t_go, cpu0=cpu0, cpu1=cpu1, expected=expected, group_state=state)

    def _result(
        self,
        variant: str,
        shape: RunShape,
        names: RunNames,
        reports: list[ChildReport],
        d: Drained,
    ) -> RunResult:
        expected = d.expected
        acked = sum(r.acked for r in reports)
        if variant == "e":
            done = int(self.r.get(names.celery_done) or 0)
            drained = acked == expected and done == expected
            start = min(r.first_start or d.t_go for r in reports)
        else:
            drained = acked == expected and d.group_state == (expected, 0)
            start = d.t_go
        elapsed = max(max(r.last_ack for r in reports) - start, 1e-9)
        hits = sum(r.cache_hits for r in reports)
        misses = sum(r.cache_misses for r in reports)
        return RunResult(
            variant=variant,
            name=VARIANTS[variant][0],
            events=expected,
            batch_size=shape.batch_size,
            processes=shape.processes,
            users=shape.users or self.o.users,
            distinct_variants=shape.distinct_variants or self.o.distinct_variants,
            elapsed_s=elapsed,
            events_per_s=expected / elapsed,
            consumer_cpu_us_per_event=sum(r.cpu_s for r in reports) / expected * 1e6,
            redis_cpu_us_per_event=(d.cpu1 - d.cpu0) / expected * 1e6,
            redis_round_trips_per_1k=sum(r.redis_round_trips for r in reports) / expected * 1e3,
            mongo_round_trips_per_1k=sum(r.mongo_round_trips for r in reports) / expected * 1e3,
            peak_rss_mb=max(r.max_rss_kb for r in reports) / 1024,
            acked=acked,
            drained_exactly=drained,
            cache_hit_ratio=hits / (hits + misses) if hits + misses else None,
            extra={k: v for r in reports for k, v in r.extra.items()},
        )

    def _group_state(self, stream: str | None, names: RunNames) -> tuple[int, int]:
        """(entries read by the group, entries pending)."""
        assert stream is not None
        for g in self.r.xinfo_groups(stream):
            if g["name"].decode() == names.group:
                return int(g.get("entries-read") or 0), int(g.get("pending") or 0)
        return 0, 0

    def _wait_drained(
        self,
        variant: str,
        stream: str | None,
        names: RunNames,
        expected: int,
        title: str,
        started: float,
        children: list[subprocess.Popen[str]],
        timeout_s: float = 1800,
    ) -> float:
        """Poll until the run drained; returns Redis CPU seconds at that moment."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if variant == "e":
                done = int(self.r.get(names.celery_done) or 0)
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


@contextlib.contextmanager
def _children(specs: list[ChildSpec]) -> Iterator[list[subprocess.Popen[str]]]:
    """The consumer processes of a run; any still running at the end are killed."""
    children = [protocol.spawn_child(spec) for spec in specs]
    try:
        yield children
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _wait_exited(variant: str, children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        try:
            child.wait(120)
        except subprocess.TimeoutExpired:
            child.kill()
            raise
        if child.returncode != 0:
            raise RuntimeError(f"variant {variant} consumer exited {child.returncode}")


def _cpu_model() -> str:
    lscpu = ""
    with contextlib.suppress(Exception):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")),
        platform.processor(),
    )


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


# --------------------------------------------------------------------------------------
# Session: main table, latency pass, sweeps, output
# --------------------------------------------------------------------------------------


def run_bench(o: BenchOptions, command: str = "") -> dict[str, Any]:
    """Run a session (`command`: how it was started, kept in the JSON); print and write it."""
    o.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(o)
    try:
        machine = bench.machine()
        bench.progress.say(
            f"pomocore benchmarks: {machine['nproc']} CPUs ({machine['cpu_model']}), "
            f"{machine['redis_server']}, MongoDB {machine['mongo']}"
        )
        main = _main_runs(bench, o)
        latencies = _latency_runs(bench, o, main) if o.latency else {}
        llm: dict[str, Any] = {}
        if "h" in o.variants:  # the LLM path: a flow of its own
            main["h"], h_latency, llm = run_llm_path(bench, o)
            if h_latency is not None:
                latencies["h"] = h_latency
        profile_run = None
        if o.profile:
            shape = RunShape(events=o.events, batch_size=o.batch_size, profile=o.profile)
            profile_run, _ = bench.run_variant("c", shape, f"c pomocore-lb under {o.profile}")
        sweeps = {s: [asdict(r) for r in _run_sweep(bench, o, s)] for s in o.sweeps}
        out = {
            "session": bench.session,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": command,
            "machine": machine,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()},
            "summary": summary(main, latencies),
            "runs": {v: [asdict(r) for r in rs] for v, rs in main.items()},
            "latency": {v: asdict(lr) for v, lr in latencies.items()},
            "sweeps": sweeps,
            "llm": llm,
            "process_scaling": process_scaling(sweeps.get("processes", []), machine["nproc"] or 1),
            "profile_run": asdict(profile_run) if profile_run else None,
            "loadavg_at_end": os.getloadavg(),
        }
    finally:
        bench.close()
    print_table(out)
    print(f"\nresults: {write_results(out, o.out)}")
    if o.plots:
        for p in write_plots(out, o.out):
            print(f"plot:    {p}")
    return out


def _main_runs(bench: Bench, o: BenchOptions) -> dict[str, list[RunResult]]:
    # Round robin (run 1 of every variant, then run 2, ...): the speed of a shared
    # machine drifts over minutes, and the ratios between variants (c / bound(f)) should
    # not depend on which variant ran in a fast stretch.
    main: dict[str, list[RunResult]] = {}
    for i in range(o.runs):
        for v in (v for v in o.variants if v not in OWN_FLOW_VARIANTS):
            shape = RunShape(o.events_for(v), o.batch_size, o.processes)
            res, _ = bench.run_variant(v, shape, f"{v} {VARIANTS[v][0]} run {i + 1}/{o.runs}")
            main.setdefault(v, []).append(res)
    return main


def _latency_runs(
    bench: Bench, o: BenchOptions, main: dict[str, list[RunResult]]
) -> dict[str, LatencyResult]:
    """Per variant, a pass at half of its median throughput: per-event latencies."""
    latencies: dict[str, LatencyResult] = {}
    for v in (v for v in o.variants if v not in OWN_FLOW_VARIANTS):
        rate = 0.5 * median([r.events_per_s for r in main[v]])
        shape = RunShape(o.events_for(v), o.batch_size, o.processes, latency_rate=rate)
        _res, lat = bench.run_variant(v, shape, f"{v} {VARIANTS[v][0]} latency")
        lat.sort()
        latencies[v] = LatencyResult.of(v, rate, lat)
    return latencies


def _sweep_shape(o: BenchOptions, sweep: str, value: int) -> RunShape:
    shape = RunShape(events=o.sweep_events or max(1000, o.events // 2), batch_size=o.batch_size)
    if sweep == "batch":
        return replace(shape, batch_size=value)
    if sweep == "processes":
        return replace(shape, processes=value)
    if sweep == "users":
        return replace(shape, users=value)
    if sweep == "hit":
        return replace(shape, distinct_variants=value)
    # rss: `value` events, nearly all URLs distinct; --quick: the same shape, 10× smaller
    events = value // 10 if o.events < 100_000 else value
    return replace(shape, events=events, distinct_variants=1_000_000)


def _run_sweep(bench: Bench, o: BenchOptions, sweep: str) -> list[RunResult]:
    results: list[RunResult] = []
    variants = [v for v in SWEEP_VARIANTS[sweep] if v in o.variants] or list(SWEEP_VARIANTS[sweep])
    repeats = max(1, o.runs) if sweep == "processes" else 1
    for value in SWEEP_VALUES[sweep]:
        for v in variants:
            shape = _sweep_shape(o, sweep, value)
            label = f"sweep {sweep}={value:,} {v}"
            runs = [bench.run_variant(v, shape, label)[0] for _ in range(repeats)]
            best = sorted(runs, key=lambda r: r.events_per_s)[len(runs) // 2]
            best.extra["sweep"] = {
                "name": sweep,
                "value": value,
                "runs_events_per_s": [r.events_per_s for r in runs],
            }
            results.append(best)
        if sweep in ("users", "hit", "rss"):  # a new stream per shape
            bench.drop_streams()
    return results
