"""`/metrics`, `/healthz` and `/readyz` on `POMOCORE_METRICS_PORT`, and `pomocore check`.

- `/healthz` (liveness): 200 while the consumer's event loop turns and each lane gets
  on with its step (core/liveness.py: a loop or lane stuck longer than
  `POMOCORE_LIVENESS_TIMEOUT_S` is 503, naming it); under the supervisor, while at least
  one consumer process is alive (each child reports its own verdict to the parent, which
  kills and restarts a child that stops reporting: LivenessReporter).
- `/readyz` (readiness): 200 when Redis answers, MongoDB answers (if the mongo sink is on),
  the consumer group exists, no lane is waiting out a Redis or sink error (a read-only
  replica, OOM, BUSY, LOADING, an outage...) and the consumer is not draining; 503
  otherwise, with a JSON body naming each check.
- `pomocore check`: the same readiness checks (without the consumer's), exit 0/1, for
  probes that cannot speak HTTP.

A BoundedHTTPServer (shell/bounded.py) in a daemon thread of its own: no web framework,
no time on the consumer's event loop, one loop thread plus OPS_WORKERS threads however
many clients connect (`POMOCORE_HTTP_MAX_CONNECTIONS`, `POMOCORE_HTTP_REQUEST_TIMEOUT_S`),
and /healthz answered on the server's loop thread so it never queues behind /readyz or
/metrics. Every answer is bounded: the probes run in a worker thread and are waited for
at most PROBE_TIMEOUT_S (shell/bounded.py), so a Redis or MongoDB that hangs makes
/readyz say so on time instead of timing the probe out. The one process that serves also samples the
group-level gauges (see pomocore.metrics), bounded the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pomocore import metrics as pm
from pomocore.bounded import (
    BoundedHTTPServer,
    BufferedRequestHandler,
    CallTimeout,
    HttpLimits,
    SingleFlight,
)
from pomocore.consumers.app import Runtime
from pomocore.core.connect import sync_mongo, sync_redis
from pomocore.core.liveness import Liveness
from pomocore.core.settings import Settings, redact

log = logging.getLogger("pomocore.health")

# The longest /readyz and `pomocore check` wait for their checks, under the probes'
# timeouts (deploy/k8s/deployment.yaml: 5 s; the Dockerfile's HEALTHCHECK: 10 s); also
# each client's socket timeout, so a check that hung is over by the next probe.
PROBE_TIMEOUT_S = 3.0
# Threads answering /readyz and /metrics (each bounded by PROBE_TIMEOUT_S or the sampler's
# timeout); /healthz needs none. A scraper and the kubelet's probes need two at most.
OPS_WORKERS = 4
OPS_LIMITS = HttpLimits(workers=OPS_WORKERS)  # the defaults, for servers built without settings

Checks = dict[str, str]


class Probes:
    """Readiness checks with their own blocking clients (made on first use, reused)."""

    def __init__(self, settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._redis: Any = None
        self._mongo: Any = None
        self._progress: Checks = {}  # the running checks' results so far
        self._flight = SingleFlight(self._run_checks, "pomocore-probes")

    def _redis_client(self) -> Any:
        if self._redis is None:
            self._redis = sync_redis(self.settings, self.timeout_s)
        return self._redis

    def _mongo_client(self) -> Any:
        if self._mongo is None:
            self._mongo = sync_mongo(self.settings, self.timeout_s, self.timeout_s)
        return self._mongo

    def check_redis(self) -> str:
        self._redis_client().ping()
        return "ok"

    def check_group(self) -> str:
        """The group exists on the stream of every shard this process serves."""
        r = self._redis_client()
        for shard in self.settings.served_shards:
            key = self.settings.shard_keys(shard).stream_key
            if not r.exists(key):
                raise LookupError(f"stream {key} does not exist yet")
            names = [
                g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                for g in r.xinfo_groups(key)
            ]
            if self.settings.group not in names:
                raise LookupError(f"group {self.settings.group} does not exist yet on {key}")
        return "ok"

    def check_mongo(self) -> str:
        self._mongo_client().admin.command("ping")
        return "ok"

    def readiness(
        self, draining: bool = False, unavailable: Callable[[], str | None] | None = None
    ) -> tuple[bool, Checks]:
        """(ready, each check's result), within `timeout_s`. `unavailable` says what the
        consumer is waiting out (its lanes' last error), if it has one to say."""
        try:
            results = self._flight.call(self.timeout_s)
        except CallTimeout as exc:  # a dependency hangs: name the check that waits on it
            results = dict(self._progress)
            waiting = next((n for n in self._names() if n not in results), "probe")
            results[waiting] = f"error: {exc}"
        if unavailable is not None:
            problem = unavailable()
            results["consumer"] = "ok" if problem is None else f"error: waiting out {problem}"
        results["draining"] = "yes" if draining else "no"
        ok = not draining and all(v == "ok" for k, v in results.items() if k != "draining")
        return ok, results

    def _names(self) -> list[str]:
        return ["redis", "group", *(["mongo"] if "mongo" in self.settings.sinks else [])]

    def _run_checks(self) -> Checks:
        """Every check in order (in the probe thread: at most one run at a time)."""
        checks: dict[str, Callable[[], str]] = {
            "redis": self.check_redis, "group": self.check_group, "mongo": self.check_mongo
        }  # fmt: skip
        self._progress = results = {}
        for name in self._names():
            try:
                results[name] = checks[name]()
            except Exception as exc:
                results[name] = f"error: {type(exc).__name__}: {redact_text(str(exc))[:200]}"
                if name != "mongo" and not isinstance(exc, LookupError):
                    # a fresh client next time: a Cluster client of redis-py 5.3 keeps the
                    # slot map it read while slots were unserved, and its group check
                    # failed with SlotNotCoveredError after the slots came back
                    self._close_redis()
        return dict(results)

    def _close_redis(self) -> None:
        if self._redis is not None:
            try:
                self._redis.close()
            finally:
                self._redis = None

    def close(self) -> None:
        self._close_redis()
        if self._mongo is not None:
            self._mongo.close()
            self._mongo = None


def redact_text(text: str) -> str:
    """Hide passwords of any URI inside a message."""
    return " ".join(redact(w) if "://" in w and "@" in w else w for w in text.split(" "))


class OpsServer:
    """The HTTP server of one process: /metrics, /healthz, /readyz."""

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        probes: Probes,
        *,
        draining: Callable[[], bool] = lambda: False,
        overdue: Callable[[], dict[str, float]] = dict,
        unavailable: Callable[[], str | None] | None = None,
        host: str = "0.0.0.0",
        limits: HttpLimits = OPS_LIMITS,
    ) -> None:
        self.registry = registry
        self.probes = probes
        self.draining = draining
        self.overdue = overdue  # what is stuck, and for how long (empty: alive)
        self.unavailable = unavailable
        self.httpd = BoundedHTTPServer(
            (host, port),
            self._handler(),
            limits,
            name="pomocore-ops-http",
            inline_paths=("/healthz",),  # liveness: cheap, never blocks, never queues
        )
        self.port = self.httpd.port

    def start(self) -> OpsServer:
        self.httpd.start()
        log.info("ops endpoint listening", extra={"port": self.port})
        return self

    def close(self) -> None:
        self.httpd.close()
        self.probes.close()

    def _handler(self) -> type[BufferedRequestHandler]:
        server = self

        class Handler(BufferedRequestHandler):  # no access log: probes every few seconds
            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, doc: dict[str, Any]) -> None:
                self._send(status, json.dumps(doc).encode(), "application/json")

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    stuck = server.overdue()
                    doc: dict[str, Any] = {"status": "dead" if stuck else "ok"}
                    if stuck:
                        doc["overdue_s"] = stuck
                    self._json(503 if stuck else 200, doc)
                elif path == "/readyz":
                    ok, checks = server.probes.readiness(server.draining(), server.unavailable)
                    self._json(200 if ok else 503, {"ready": ok, "checks": checks})
                else:
                    self._json(404, {"error": "not found"})

        return Handler


class Beat(Protocol):
    """A float shared with the supervisor (a multiprocessing.Value("d"))."""

    value: float


class LivenessReporter:
    """A supervised child's liveness, told to its parent: a thread of its own (a blocked
    event loop cannot stop it) writes the time into `beat` while the child is alive. The
    parent kills a child whose beat is older than the liveness timeout (shell/supervisor.py)."""

    def __init__(self, liveness: Liveness, beat: Beat) -> None:
        self.liveness = liveness
        self.beat = beat
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pomocore-liveness", daemon=True)

    def start(self) -> LivenessReporter:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            if self.liveness.alive():
                self.beat.value = time.monotonic()  # one clock for every process (Linux)
            if self._done.wait(self.liveness.period_s):
                return

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)


class ConsumerOps:
    """What `pomocore run` starts next to a consumer: recorders, the HTTP server when this
    process is the one that serves (`metrics_port` > 0), its liveness reporter when it is
    a supervised child."""

    def __init__(
        self,
        server: OpsServer | None,
        sampler: pm.GroupSampler | None,
        reporter: LivenessReporter | None = None,
    ) -> None:
        self.server = server
        self.sampler = sampler
        self.reporter = reporter

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()
        if self.server is not None:
            self.server.close()
        if self.sampler is not None:
            self.sampler.close()


def consumer_observer(settings: Settings) -> pm.MetricsObserver | None:
    """The observer a consumer process is built with when it records metrics (it serves
    them itself, or its supervisor aggregates its files); None when metrics are off."""
    if not pm.recording_enabled(settings):
        return None
    if pm.multiprocess_dir() is not None and settings.metrics_port:
        pm.prepare_multiprocess(settings)  # single process with the variable set (Docker)
    return pm.MetricsObserver(pm.pipeline_metrics())


def start_consumer_ops(
    rt: Runtime,
    stop: asyncio.Event,
    observer: pm.MetricsObserver | None,
    beat: Beat | None = None,
) -> ConsumerOps:
    """Counter sync beside the runtime, /metrics and probes when this process serves, and
    liveness reports to the supervisor when it is a child (`beat`)."""
    settings = rt.settings
    reporter = None
    if beat is not None and rt.liveness is not None:
        reporter = LivenessReporter(rt.liveness, beat).start()
    if observer is None:
        return ConsumerOps(None, None, reporter)
    rt.background.append(pm.counter_sync_task(rt, observer.metrics))
    if not settings.metrics_port:
        return ConsumerOps(None, None, reporter)  # a supervised child: the parent serves
    sampler = pm.GroupSampler(settings)
    server = OpsServer(
        settings.metrics_port,
        pm.serving_registry(sampler),
        Probes(settings),
        draining=lambda: stop.is_set() or bool(rt.consumer.draining),
        overdue=rt.liveness.overdue if rt.liveness is not None else dict,
        unavailable=rt.unavailable,
        host=settings.metrics_host,
        limits=HttpLimits.from_settings(settings, OPS_WORKERS),
    ).start()
    return ConsumerOps(server, sampler)


class SupervisorOps:
    """The supervisor parent's side: serves every child's metrics, marks dead children."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path: str | None = None
        self.ops = ConsumerOps(None, None)

    def start(self, draining: Callable[[], bool], alive: Callable[[], bool]) -> None:
        if not self.settings.metrics_port:
            return
        self.path = pm.prepare_multiprocess(self.settings)
        sampler = pm.GroupSampler(self.settings)
        server = OpsServer(
            self.settings.metrics_port,
            pm.serving_registry(sampler),
            Probes(self.settings),
            draining=draining,
            overdue=lambda: {} if alive() else {"consumer processes": 0.0},
            host=self.settings.metrics_host,
            limits=HttpLimits.from_settings(self.settings, OPS_WORKERS),
        ).start()
        self.ops = ConsumerOps(server, sampler)

    def child_exited(self, pid: int | None) -> None:
        pm.mark_process_dead(pid)

    def close(self) -> None:
        self.ops.close()


def check_command(settings: Settings, out: TextIO) -> int:
    """`pomocore check`: readiness without HTTP; prints JSON, exits 0 ready / 1 not."""
    probes = Probes(settings)
    try:
        ok, checks = probes.readiness()
    finally:
        probes.close()
    checks.pop("draining", None)
    out.write(json.dumps({"ready": ok, "checks": checks}) + "\n")
    return 0 if ok else 1
