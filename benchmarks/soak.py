"""`make soak`: the pipeline at half its measured maximum for a long while, read by many.

1. Embedded Redis and MongoDB-wire servers (or POMOCORE_REDIS_URL / POMOCORE_MONGO_URI),
   one consumer process (`pomocore run --metrics-port`) and the HTTP reader
   (`pomocore leaderboard serve`).
2. Calibrate: a backlog of `--calibrate-events` is drained; its rate is the maximum.
3. Soak: a producer publishes at `--fraction` (0.5) of that rate, in 100 ms ticks, for
   `--duration-s` (600), while `--readers` (50) threads query top, rank and around-me
   (`READS`, in turn at random) in a loop. Every `--sample-s` the consumer's /metrics
   gives its RSS and end-to-end latency histogram, and XINFO the group's lag + pending.
4. Report: p50/p95/p99 of the end-to-end latency (from the histogram's deltas over the
   soak, interpolated within its buckets), of the reader requests as the clients timed
   them (all, and per kind of query), and per kind as the API's own
   `pomocore_http_request_duration_seconds` saw them; RSS and lag over time (a PNG), and
   the growth checks: a least-squares line over the second half of the soak must not
   rise by more than its allowance (`growth_checks`). Exit 1 when one fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.measure import percentile
from benchmarks.options import RUNS_DIR
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis, free_port

APPS = ("Code", "Slack", "YouTube", "Terminal", "Figma", "Notion", "Spotify", "Zoom")
USERS = 1000
TICK_S = 0.1
E2E = "pomocore_end_to_end_latency_seconds"
HTTP_SECONDS = "pomocore_http_request_duration_seconds"
BOARD = "category=work&period=daily"
# The reads a leaderboard screen makes (issue #16 §7): kind → (route, query; `{user}` a
# user id).
READS = {
    "top": ("/v1/leaderboard/top", f"{BOARD}&limit=10"),
    "rank": ("/v1/leaderboard/rank", f"user={{user}}&{BOARD}"),
    "around": ("/v1/leaderboard/around", f"user={{user}}&{BOARD}&n=5"),
}


@dataclass
class Sample:
    t_s: float
    rss_bytes: float
    lag: float  # undelivered + pending entries
    e2e_buckets: dict[float, float]  # cumulative count by upper bound


@dataclass
class Growth:
    name: str
    slope_per_min: float
    rise: float  # fitted rise over the second half
    allowed: float
    ok: bool


@dataclass
class SoakReport:
    duration_s: float
    readers: int
    max_events_per_s: float
    target_events_per_s: float
    published: int
    e2e_s: dict[str, float]
    reader_ms: dict[str, float]
    reader_requests: int
    reader_errors: int
    reader_ms_by_kind: dict[str, dict[str, float]]  # as the clients timed them
    reader_requests_by_kind: dict[str, int]
    reader_server_ms_by_kind: dict[str, dict[str, float]]  # the API's own histogram
    rss_mb: dict[str, float]
    lag: dict[str, float]
    growth: list[Growth]
    ok: bool
    png: str
    samples: list[dict[str, float]] = field(default_factory=list)


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def growth(name: str, ts: Sequence[float], ys: Sequence[float], allowed: float) -> Growth:
    """Rising steadily = the fitted line over the second half rises by more than `allowed`."""
    half = [(t, y) for t, y in zip(ts, ys, strict=True) if t >= ts[-1] / 2] if ts else []
    slope = fit_slope([t for t, _ in half], [y for _, y in half])
    span = (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    rise = slope * span
    return Growth(name, slope * 60, rise, allowed, rise <= allowed)


# A backlog that stopped growing but stays large passes the growth check: the consumer
# kept up with nothing. The backlog at the end must be at most this many seconds of traffic.
BACKLOG_LIMIT_S = 10.0


def backlog(lag: Sequence[float], target: float) -> Growth:
    """The backlog at the end of the soak, against BACKLOG_LIMIT_S of traffic."""
    last = lag[-1] if lag else 0.0
    allowed = max(BACKLOG_LIMIT_S * target, 200.0)
    return Growth("final_backlog_entries", 0.0, last, allowed, last <= allowed)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative `buckets` (linear within a bucket)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def delta(later: dict[float, float], earlier: dict[float, float]) -> dict[float, float]:
    return {b: later[b] - earlier.get(b, 0.0) for b in later}


def scrape(url: str) -> tuple[float, dict[float, float]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    rss = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "process_resident_memory_bytes":
                rss += s.value
            elif s.name == f"{E2E}_bucket":
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
    return rss, buckets


def route_buckets(url: str) -> dict[str, dict[float, float]]:
    """The leaderboard API's request-time histogram: route → cumulative count by bound."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{HTTP_SECONDS}_bucket":
                out.setdefault(s.labels["route"], {})[float(s.labels["le"])] = s.value
    return out


def event(rng: random.Random) -> dict[str, str]:
    return {
        "userId": f"u{int(rng.paretovariate(1.2)) % USERS}",
        "app": rng.choice(APPS),
        "title": "",
        "url": "",
        "duration": repr(round(rng.uniform(60, 1500), 1)),
        "timestamp": repr(time.time()),
    }


def lag_of(r: redis.Redis, settings: Settings) -> float:
    for g in r.xinfo_groups(settings.keys.stream_key):
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == settings.group:
            return float(g.get("lag") or 0) + float(g["pending"])
    return 0.0


def wait_ok(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 in {timeout_s} s")


@contextlib.contextmanager
def process(
    args: Sequence[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(list(args), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def drain_time(r: redis.Redis, settings: Settings, n: int, rng: random.Random) -> float:
    """Publish a backlog of n events, then the seconds until the group has none left."""
    stream = settings.keys.stream_key
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, event(rng))  # type: ignore[arg-type]
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    start = time.monotonic()
    while lag_of(r, settings) > 0:
        time.sleep(0.05)
    return time.monotonic() - start


class Readers:
    """`n` threads querying top, rank and around-me over HTTP in a loop; latencies kept
    by time and kind."""

    def __init__(self, base: str, n: int) -> None:
        self.base, self.n = base, n
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[tuple[float, float]] = []  # (t since start, seconds)
        self.by_kind: dict[str, list[float]] = {kind: [] for kind in READS}
        self.errors = 0
        self.threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(n)
        ]
        self.start_s = 0.0

    def run(self) -> None:
        self.start_s = time.monotonic()
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _loop(self, i: int) -> None:
        rng = random.Random(i)
        kinds = list(READS)
        while not self.stop.is_set():
            kind = rng.choice(kinds)
            route, query = READS[kind]
            path = f"{route}?{query.format(user=f'u{rng.randrange(50)}')}"
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.base + path, timeout=10) as response:
                    response.read()
                    ok = response.status == 200
            except OSError:
                ok = False
            elapsed = time.monotonic() - t0
            with self.lock:
                if ok:
                    self.latencies.append((t0 - self.start_s, elapsed))
                    self.by_kind[kind].append(elapsed)
                else:
                    self.errors += 1


def histogram_quantiles(buckets: dict[float, float], scale: float = 1.0) -> dict[str, float]:
    """p50/p95/p99 of cumulative `buckets` (interpolated as Prometheus does), times `scale`."""
    return {f"p{q}": round(histogram_quantile(q / 100, buckets) * scale, 3) for q in (50, 95, 99)}


def quantiles(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    return {f"p{q}": round(percentile(ordered, q / 100) * scale, 3) for q in (50, 95, 99)}


def windows(ts: Sequence[float], n: int) -> list[list[int]]:
    """Indices of `ts` cut into n consecutive time windows."""
    if not ts:
        return []
    width = (ts[-1] + 1e-9) / n
    out: list[list[int]] = [[] for _ in range(n)]
    for i, t in enumerate(ts):
        out[min(n - 1, int(t / width))].append(i)
    return out


def run_soak(
    duration_s: float,
    readers: int,
    fraction: float,
    calibrate_events: int,
    sample_s: float,
    out_dir: Path,
) -> SoakReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("POMOCORE_REDIS_URL")
        mongo_uri = os.environ.get("POMOCORE_MONGO_URI")
        if not redis_url:
            server = stack.enter_context(_running(EmbeddedRedis()))
            redis_url = server.url
        if not mongo_uri:
            mongo = stack.enter_context(_running(EmbeddedMongo()))
            mongo_uri = mongo.url
        metrics_port, http_port = free_port(), free_port()
        env = {
            **os.environ,
            "POMOCORE_REDIS_URL": redis_url,
            "POMOCORE_MONGO_URI": mongo_uri,
            "POMOCORE_MONGO_DB": f"pomosoak{int(time.time())}",
            "POMOCORE_STREAM": f"pomosoak:{int(time.time())}",
            "POMOCORE_LOG_LEVEL": "WARNING",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: in-memory metrics
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("POMOCORE_")})
        pomocore = [sys.executable, "-m", "pomocore"]
        log = out_dir / "soak.log"
        stack.enter_context(
            process([*pomocore, "run", "--metrics-port", str(metrics_port)], env, log)
        )
        wait_ok(f"http://127.0.0.1:{metrics_port}/readyz", 60)
        stack.enter_context(
            process([*pomocore, "leaderboard", "serve", "--port", str(http_port)], env, log)
        )
        wait_ok(f"http://127.0.0.1:{http_port}/healthz", 60)
        r = redis.Redis.from_url(redis_url)
        stack.callback(r.close)
        rng = random.Random(7)
        max_rate = calibrate_events / max(drain_time(r, settings, calibrate_events, rng), 1e-3)
        target = max_rate * fraction
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        reader_base = f"http://127.0.0.1:{http_port}"
        before = route_buckets(f"{reader_base}/metrics")
        report = _soak(r, settings, metrics_url, reader_base,
                       duration_s, readers, max_rate, target, sample_s, out_dir, rng)  # fmt: skip
        after = route_buckets(f"{reader_base}/metrics")
        report.reader_server_ms_by_kind = {
            kind: histogram_quantiles(delta(after[route], before[route]), 1000)
            for kind, (route, _) in READS.items()
        }
        return report


@contextlib.contextmanager
def _running(server: Any) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _soak(
    r: redis.Redis,
    settings: Settings,
    metrics_url: str,
    reader_base: str,
    duration_s: float,
    readers: int,
    max_rate: float,
    target: float,
    sample_s: float,
    out_dir: Path,
    rng: random.Random,
) -> SoakReport:
    pool = Readers(reader_base, readers)
    samples: list[Sample] = []
    published = 0
    start = time.monotonic()
    pool.run()
    next_sample = start
    owed = 0.0
    while (now := time.monotonic()) - start < duration_s:
        owed += target * TICK_S
        pipe = r.pipeline(transaction=False)
        for _ in range(int(owed)):
            pipe.xadd(settings.keys.stream_key, event(rng))  # type: ignore[arg-type]
        published += int(owed)
        owed -= int(owed)
        pipe.execute()
        if now >= next_sample:
            rss, buckets = scrape(metrics_url)
            samples.append(Sample(now - start, rss, lag_of(r, settings), buckets))
            next_sample += sample_s
        time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
    pool.join()
    return _report(samples, pool, duration_s, readers, max_rate, target, published, out_dir)


# What "growing" means, over the second half of the soak (a least-squares line), besides
# the bounded backlog at the end (`backlog`): RSS may rise by 5% of its mean or 8 MB; the
# backlog (lag + pending) by two seconds of traffic or 200 entries; the windowed e2e p50
# and reader p99 by half of their median or 20 ms. Steady state moves by less; a leak or
# a falling-behind consumer by more.
def growth_checks(
    samples: list[Sample], reader_windows: list[tuple[float, float]], target: float
) -> list[Growth]:
    ts = [s.t_s for s in samples]
    rss = [s.rss_bytes / 2**20 for s in samples]
    lag = [s.lag for s in samples]
    e2e_t, e2e_p50 = [], []
    for a, b in itertools.pairwise(samples):
        d = delta(b.e2e_buckets, a.e2e_buckets)
        if d and max(d.values()) > 0:
            e2e_t.append(b.t_s)
            e2e_p50.append(histogram_quantile(0.5, d))
    mean_rss = sum(rss) / len(rss) if rss else 0.0
    med = sorted(e2e_p50)[len(e2e_p50) // 2] if e2e_p50 else 0.0
    rmed = sorted(v for _, v in reader_windows)[len(reader_windows) // 2] if reader_windows else 0.0
    return [
        backlog(lag, target),
        growth("rss_mb", ts, rss, max(0.05 * mean_rss, 8.0)),
        growth("lag_entries", ts, lag, max(2 * target, 200.0)),
        growth("e2e_p50_s", e2e_t, e2e_p50, max(0.5 * med, 0.02)),
        growth(
            "reader_p99_s",
            [t for t, _ in reader_windows],
            [v for _, v in reader_windows],
            max(0.5 * rmed, 0.02),
        ),
    ]


def _report(
    samples: list[Sample],
    pool: Readers,
    duration_s: float,
    readers: int,
    max_rate: float,
    target: float,
    published: int,
    out_dir: Path,
) -> SoakReport:
    lat = pool.latencies
    reader_windows = []
    for idx in windows([t for t, _ in lat], max(2, len(samples) // 5)):
        if idx:
            values = sorted(lat[i][1] for i in idx)
            reader_windows.append((lat[idx[-1]][0], percentile(values, 0.99)))
    total = delta(samples[-1].e2e_buckets, samples[0].e2e_buckets) if samples else {}
    checks = growth_checks(samples, reader_windows, target)
    png = out_dir / "soak.png"
    plot(samples, reader_windows, png)
    rss = [s.rss_bytes / 2**20 for s in samples]
    lags = [s.lag for s in samples]
    return SoakReport(
        duration_s=duration_s,
        readers=readers,
        max_events_per_s=round(max_rate, 1),
        target_events_per_s=round(target, 1),
        published=published,
        e2e_s={
            f"p{q}": round(histogram_quantile(q / 100, total), 4) if total else 0.0
            for q in (50, 95, 99)
        },
        reader_ms=quantiles([v for _, v in lat], 1000),
        reader_requests=len(lat),
        reader_errors=pool.errors,
        reader_ms_by_kind={k: quantiles(v, 1000) for k, v in pool.by_kind.items()},
        reader_requests_by_kind={k: len(v) for k, v in pool.by_kind.items()},
        reader_server_ms_by_kind={},  # filled in from the API's /metrics by run_soak
        rss_mb={"first": round(rss[0], 1), "last": round(rss[-1], 1), "max": round(max(rss), 1)}
        if rss
        else {},
        lag={"max": max(lags), "last": lags[-1]} if lags else {},
        growth=checks,
        ok=all(c.ok for c in checks),
        png=str(png),
        samples=[
            {"t_s": round(s.t_s, 1), "rss_mb": round(s.rss_bytes / 2**20, 1), "lag": s.lag}
            for s in samples
        ],
    )


def plot(samples: list[Sample], reader_windows: list[tuple[float, float]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ts = [s.t_s for s in samples]
    axes[0].plot(ts, [s.rss_bytes / 2**20 for s in samples])
    axes[0].set_ylabel("consumer RSS (MiB)")
    axes[1].plot(ts, [s.lag for s in samples])
    axes[1].set_ylabel("lag + pending (entries)")
    axes[2].plot([t for t, _ in reader_windows], [v * 1000 for _, v in reader_windows])
    axes[2].set_ylabel("reader p99 (ms)")
    axes[2].set_xlabel("seconds into the soak")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    p.add_argument("--duration-s", type=float, default=600.0, help="soak length (default: 600)")
    p.add_argument("--readers", type=int, default=50, help="concurrent HTTP readers (default: 50)")
    p.add_argument(
        "--fraction", type=float, default=0.5, help="of the measured maximum (default: 0.5)"
    )
    p.add_argument(
        "--calibrate-events",
        type=int,
        default=20_000,
        help="backlog drained to measure the maximum (default: 20000)",
    )
    p.add_argument("--sample-s", type=float, default=2.0, help="sampling interval (default: 2)")
    p.add_argument(
        "--out",
        type=Path,
        default=RUNS_DIR / "soak",
        help="directory of soak.json, soak.png and soak.log (default: benchmarks/runs/soak, "
        "git-ignored)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = run_soak(
        args.duration_s, args.readers, args.fraction, args.calibrate_events, args.sample_s, args.out
    )
    doc = asdict(report)
    (args.out / "soak.json").write_text(json.dumps(doc, indent=2) + "\n")
    summary = {k: v for k, v in doc.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
