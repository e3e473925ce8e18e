"""`/metrics`, `/healthz` and `/readyz` on `POMOCORE_METRICS_PORT`, and `pomocore check`.

- `/healthz` (liveness): 200 while the process serves requests (and, under the
  supervisor, while at least one consumer process is alive).
- `/readyz` (readiness): 200 when Redis answers, MongoDB answers (if the mongo sink is on),
  the consumer group exists and the consumer is not draining; 503 otherwise, with a JSON
  body naming each check.
- `pomocore check`: the same readiness checks (without the draining one), exit 0/1, for
  probes that cannot speak HTTP.

A stdlib `ThreadingHTTPServer` in a daemon thread: no web framework, no event-loop time.
The one process that serves also samples the group-level gauges (see pomocore.metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pymongo import MongoClient

from pomocore import metrics as pm
from pomocore.consumers.app import Runtime
from pomocore.core.connect import sync_redis
from pomocore.core.settings import Settings, redact

log = logging.getLogger("pomocore.health")

PROBE_TIMEOUT_S = 2.0
BIND_HOST = "0.0.0.0"


class Probes:
    """Readiness checks with their own blocking clients (made on first use, reused)."""

    def __init__(self, settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._redis: Any = None
        self._mongo: Any = None
        self._lock = threading.Lock()

    def _redis_client(self) -> Any:
        if self._redis is None:
            self._redis = sync_redis(self.settings, self.timeout_s)
        return self._redis

    def _mongo_client(self) -> Any:
        if self._mongo is None:
            ms = int(self.timeout_s * 1000)
            self._mongo = MongoClient(
                self.settings.mongo_uri,
                serverSelectionTimeoutMS=ms,
                connectTimeoutMS=ms,
                socketTimeoutMS=ms,
            )
        return self._mongo

    def check_redis(self) -> str:
        self._redis_client().ping()
        return "ok"

    def check_group(self) -> str:
        r = self._redis_client()
        key = self.settings.keys.stream_key
        if not r.exists(key):
            raise LookupError(f"stream {key} does not exist yet")
        names = [
            g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            for g in r.xinfo_groups(key)
        ]
        if self.settings.group not in names:
            raise LookupError(f"group {self.settings.group} does not exist yet")
        return "ok"

    def check_mongo(self) -> str:
        self._mongo_client().admin.command("ping")
        return "ok"

    def readiness(self, draining: bool = False) -> tuple[bool, dict[str, str]]:
        checks: list[tuple[str, Callable[[], str]]] = [
            ("redis", self.check_redis),
            ("group", self.check_group),
        ]
        if "mongo" in self.settings.sinks:
            checks.append(("mongo", self.check_mongo))
        results: dict[str, str] = {}
        with self._lock:
            for name, check in checks:
                try:
                    results[name] = check()
                except Exception as exc:
                    results[name] = f"error: {type(exc).__name__}: {redact_text(str(exc))[:200]}"
                    if name == "redis":
                        self._close_redis()
        results["draining"] = "yes" if draining else "no"
        ok = not draining and all(v == "ok" for k, v in results.items() if k != "draining")
        return ok, results

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
        alive: Callable[[], bool] = lambda: True,
        host: str = BIND_HOST,
    ) -> None:
        self.registry = registry
        self.probes = probes
        self.draining = draining
        self.alive = alive
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="pomocore-ops-http", daemon=True
        )

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("ops endpoint listening", extra={"port": self.port})
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.probes.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the logs

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
                    alive = server.alive()
                    self._json(200 if alive else 503, {"status": "ok" if alive else "dead"})
                elif path == "/readyz":
                    ok, checks = server.probes.readiness(server.draining())
                    self._json(200 if ok else 503, {"ready": ok, "checks": checks})
                else:
                    self._json(404, {"error": "not found"})

        return Handler


class ConsumerOps:
    """What `pomocore run` starts next to a consumer: recorders, and the HTTP server when
    this process is the one that serves (`metrics_port` > 0)."""

    def __init__(self, server: OpsServer | None, sampler: pm.GroupSampler | None) -> None:
        self.server = server
        self.sampler = sampler

    def close(self) -> None:
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
    rt: Runtime, stop: asyncio.Event, observer: pm.MetricsObserver | None
) -> ConsumerOps:
    """Counter sync beside the runtime, and /metrics and probes when this process serves."""
    settings = rt.settings
    if observer is None:
        return ConsumerOps(None, None)
    rt.background.append(pm.counter_sync_task(rt, observer.metrics))
    if not settings.metrics_port:
        return ConsumerOps(None, None)  # a supervised child: the parent serves
    sampler = pm.GroupSampler(settings)
    server = OpsServer(
        settings.metrics_port,
        pm.serving_registry(sampler),
        Probes(settings),
        draining=lambda: stop.is_set() or bool(rt.consumer.draining),
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
            alive=alive,
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
