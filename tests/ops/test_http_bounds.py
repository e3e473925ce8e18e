"""The HTTP servers (the ops port, the leaderboard API) survive the internet's manners
(issue #14 §4): idle and slow clients hold no thread and are closed after
POMOCORE_HTTP_REQUEST_TIMEOUT_S, at most POMOCORE_HTTP_MAX_CONNECTIONS stay open, and
/healthz answers within its probe timeout throughout. The leaderboard API takes a bearer
token from a file and writes one access-log line per request."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import selectors
import socket
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from pomocore.bounded import BoundedHTTPServer, BufferedRequestHandler, HttpLimits
from pomocore.core.errors import ConfigError
from pomocore.core.logs import JsonFormatter
from pomocore.core.settings import Settings
from pomocore.embedded import free_port
from pomocore.health import PROBE_TIMEOUT_S, OpsServer, Probes
from pomocore.http_api import API_WORKERS, LeaderboardHTTPServer
from pomocore.reader import LeaderboardReader
from tests.support.consumer import serving_consumer
from tests.support.processes import spawn_pomocore
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

IDLE_CONNECTIONS = 1_500  # the figure: 1,500 idle sockets held 1,506 threads
TOKEN = "0123456789abcdef-very-secret-token"
# The liveness probe's timeout in deploy/k8s/deployment.yaml (timeoutSeconds: 3).
LIVENESS_TIMEOUT_S = 3.0
PROBE_EVERY_S = 0.05
LATE_CONNECTIONS = 20


class ProbeWatch:
    """GETs a URL every PROBE_EVERY_S from a thread of its own; keeps (seconds, status) of each,
    status 0 for no answer at all within the probe timeout."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.wait(PROBE_EVERY_S):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=LIVENESS_TIMEOUT_S) as resp:
                    status = int(resp.status)
            except Exception:
                status = 0
            self.seen.append((time.monotonic() - started, status))

    def __enter__(self) -> ProbeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def failures(self) -> list[tuple[float, int]]:
        return [(s, code) for s, code in self.seen if code != 200 or s >= LIVENESS_TIMEOUT_S]


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed `sock` (EOF or reset); False while it is open."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno != errno.ENOTCONN  # not connected yet is not closed


def open_idle(
    port: int, n: int, within_s: float = 10.0, sent: Callable[[], object] = lambda: None
) -> list[socket.socket]:
    """`n` connections that never send a byte, opened without waiting for the server (a
    server that accepts slowly must not slow the test down): non-blocking connects, then
    `sent()`, then at most `within_s` for the handshakes."""
    socks = []
    for _ in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    sent()
    pending = set(socks)
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + within_s
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                sel.unregister(key.fileobj)
                pending.discard(cast(socket.socket, key.fileobj))
    return socks


@contextlib.asynccontextmanager
async def consumer_ops_port(settings: Settings) -> AsyncIterator[int]:
    """A running consumer's ops port (/metrics, /healthz, /readyz)."""
    async with serving_consumer(settings) as (_, port):
        yield port


@contextlib.asynccontextmanager
async def leaderboard_api_port(settings: Settings) -> AsyncIterator[int]:
    """The leaderboard API's port, with the limits `pomocore leaderboard serve` gives it."""
    limits = HttpLimits.from_settings(settings, API_WORKERS)
    with serving(api_server, settings, limits) as server:
        yield int(server.port)


@pytest.mark.parametrize(
    "serve", [consumer_ops_port, leaderboard_api_port], ids=["ops", "leaderboard-api"]
)
async def test_idle_connections_hold_no_thread_and_healthz_answers_throughout(
    settings: Settings, serve: Callable[[Settings], contextlib.AbstractAsyncContextManager[int]]
) -> None:
    """1,500 idle sockets against a running consumer's ops port, or the leaderboard API:
    the thread count stays put, every socket is closed after the request timeout,
    /healthz answers every poll."""
    timeout_s = 2.0
    s = dataclasses.replace(settings, http_request_timeout_s=timeout_s)
    async with serve(s) as port:
        with ProbeWatch(f"http://127.0.0.1:{port}/healthz") as watch:
            wait_for(lambda: bool(watch.seen), 10)
            threads_before = threading.active_count()
            opened_at = time.monotonic()
            idle = open_idle(port, IDLE_CONNECTIONS)
            opening_s = time.monotonic() - opened_at
            try:
                await asyncio.sleep(0.5)
                # The server closes only what its bound needs (each probe pushes out one
                # more), unless the opening itself took the whole timeout. Counted, not
                # picked by position: the flood's order is not the server's (a loaded
                # server lets its accept queue fill, and the handshakes the kernel then
                # drops are retried and accepted last: CI's one failure of a check on
                # `idle[-100:]`). Which ones stay is the next test's.
                if time.monotonic() - opened_at < timeout_s:
                    still_open = sum(not closed_by_server(c) for c in idle)
                    probes_at_most = int(timeout_s / PROBE_EVERY_S) + 1
                    least = s.http_max_connections - probes_at_most
                    assert still_open >= least, (still_open, least)
                threads_during = threading.active_count()
                # Without the bound: one thread per socket (1,500 more).
                assert threads_during <= threads_before + 8, (threads_before, threads_during)
                while not all(closed_by_server(c) for c in idle):
                    assert time.monotonic() - opened_at < timeout_s + 5, "idle sockets stay open"
                    await asyncio.sleep(0.1)
                closed_after_s = time.monotonic() - opened_at
            finally:
                for c in idle:
                    c.close()
            await asyncio.sleep(0.3)
        assert len(watch.seen) >= 10
        assert watch.failures() == [], watch.failures()[:5]
        slowest_s = max(seconds for seconds, _ in watch.seen)
    print(
        f"{IDLE_CONNECTIONS} idle, opened in {opening_s:.2f} s: threads {threads_before} -> "
        f"{threads_during}; all closed "
        f"{closed_after_s:.2f} s after opening; {len(watch.seen)} /healthz polls, slowest "
        f"{slowest_s * 1000:.0f} ms"
    )


def ops_server(settings: Settings, limits: HttpLimits) -> Any:
    return OpsServer(free_port(), CollectorRegistry(), Probes(settings), limits=limits)


def api_server(settings: Settings, limits: HttpLimits) -> Any:
    reader = LeaderboardReader.from_settings(settings)
    return LeaderboardHTTPServer(reader, free_port(), token=TOKEN, limits=limits)


SERVERS = pytest.mark.parametrize("make", [ops_server, api_server], ids=["ops", "api"])


@contextlib.contextmanager
def serving(make: Callable[[Settings, HttpLimits], Any], settings: Settings,
            limits: HttpLimits) -> Iterator[Any]:  # fmt: skip
    server = make(settings, limits).start()
    try:
        yield server
    finally:
        server.close()
        reader = getattr(server, "reader", None)
        if reader is not None:
            reader.close()


@SERVERS
def test_a_client_trickling_its_headers_is_closed_at_the_request_timeout(
    settings: Settings, make: Callable[[Settings, HttpLimits], Any]
) -> None:
    """Slowloris: a header line every 0.2 s never completes the request; the deadline
    counts from the accept, so the connection is closed however busy the client looks."""
    timeout_s = 1.0
    with serving(make, settings, HttpLimits(request_timeout_s=timeout_s)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed_after_s = None
        for i in range(50):  # at most 10 s
            time.sleep(0.2)
            if closed_by_server(sock):
                closed_after_s = time.monotonic() - started
                break
            with contextlib.suppress(OSError):
                sock.sendall(f"X-Trickle-{i}: y\r\n".encode())
        sock.close()
        assert closed_after_s is not None, "still open after 10 s of trickled headers"
        assert timeout_s - 0.1 <= closed_after_s <= timeout_s + 1.0, closed_after_s
        assert server.httpd.stats.timed_out == 1


@SERVERS
def test_an_oversized_request_head_is_refused(
    settings: Settings, make: Callable[[Settings, HttpLimits], Any]
) -> None:
    with serving(make, settings, HttpLimits(max_head_bytes=4096)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        answer = sock.recv(1024)
        sock.close()
        assert answer.startswith(b"HTTP/1.0 431 "), answer
        assert server.httpd.stats.too_large == 1


class SlowHandler(BufferedRequestHandler):
    """/slow waits for `release` (a request stuck behind a hung dependency); /healthz
    answers at once."""

    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.release.wait(30)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_requests_stuck_on_a_worker_cannot_lock_out_the_probe() -> None:
    """Every connection holds a complete request that waits for the one worker: a probe
    still gets in (the longest-waiting connection makes room) and is answered at once."""
    limits = HttpLimits(max_connections=8, request_timeout_s=20.0, workers=1)
    server = BoundedHTTPServer(
        ("127.0.0.1", free_port()), SlowHandler, limits, name="t", inline_paths=("/healthz",)
    ).start()
    SlowHandler.release.clear()
    stuck = []
    try:
        for _ in range(limits.max_connections):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /slow HTTP/1.0\r\n\r\n")
            stuck.append(sock)
        wait_for(lambda: server.open_connections() == limits.max_connections, 5)
        threads = threading.active_count()
        for _ in range(3):
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=3) as r:
                assert r.status == 200 and r.read() == b"ok"
            assert time.monotonic() - started < 1.0
        assert server.open_connections() <= limits.max_connections
        assert server.stats.evicted >= 1  # the first probe made room; later ones reuse it
        assert threading.active_count() == threads  # the probe took no thread
    finally:
        SlowHandler.release.set()
        for sock in stuck:
            sock.close()
        server.close()


def test_a_flood_past_the_accept_queue_keeps_the_newest_connections() -> None:
    """1,500 connections reach a server that is not accepting yet: the kernel queues
    LISTEN_BACKLOG of them and drops the rest, whose handshakes the client retries 1 s
    later; the server starts once every connect is sent. Connections opened after all of
    them are the newest to the server and all stay open; of the flood, exactly the
    bound's room stays open."""
    limits = HttpLimits(max_connections=256, request_timeout_s=10.0, workers=1)
    server = BoundedHTTPServer(("127.0.0.1", free_port()), SlowHandler, limits, name="t")
    idle: list[socket.socket] = []
    late: list[socket.socket] = []
    try:
        idle = open_idle(server.port, IDLE_CONNECTIONS, sent=server.start)
        # A handshake the client sees done may still wait in the server's kernel (its
        # last ACK dropped while the queue was full, taken on a SYN-ACK resent 1 s later):
        # the late ones are opened once the server has accepted the whole flood.
        wait_for(lambda: server.stats.accepted == IDLE_CONNECTIONS, 30)
        late = open_idle(server.port, LATE_CONNECTIONS)
        wait_for(lambda: server.stats.accepted == IDLE_CONNECTIONS + LATE_CONNECTIONS, 10)
        assert not any(closed_by_server(c) for c in late)
        flood_open = [i for i, c in enumerate(idle) if not closed_by_server(c)]
        assert len(flood_open) == limits.max_connections - LATE_CONNECTIONS
    finally:
        for c in idle + late:
            c.close()
        server.close()


# --- the leaderboard API: bearer token and access log -----------------------------------


def _request(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers)


def test_the_api_wants_the_bearer_token_and_logs_each_request_without_it(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pomocore.http_api.access")
    reader = LeaderboardReader.from_settings(settings)
    server = LeaderboardHTTPServer(reader, free_port(), token=TOKEN).start()
    base = f"http://127.0.0.1:{server.port}"
    top = f"{base}/v1/leaderboard/top?category=work&period=daily&date=2026-02-12&user=u42"
    try:
        status, headers = _request(top)
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="pomocore"'
        status, headers = _request(top, "Bearer wrong-token-of-some-length")
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="pomocore", error="invalid_token"'
        status, headers = _request(top, f"Basic {TOKEN}")
        assert status == 401 and 'error="invalid_request"' in headers["WWW-Authenticate"]
        assert _request(top, f"Bearer {TOKEN}")[0] == 200
        assert _request(top, f"bearer {TOKEN}")[0] == 200  # the scheme is case-insensitive
        assert _request(f"{base}/healthz")[0] == 200  # probes carry no token
        assert _request(top, f"Bearer {TOKEN}", method="DELETE")[0] == 405
        wait_for(lambda: len(_access(caplog)) == 7, 5)
    finally:
        server.close()
        reader.close()
    lines = _access(caplog)
    assert [(r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", "/v1/leaderboard/top", 401),
        ("GET", "/v1/leaderboard/top", 401),
        ("GET", "/v1/leaderboard/top", 401),
        ("GET", "/v1/leaderboard/top", 200),
        ("GET", "/v1/leaderboard/top", 200),
        ("GET", "/healthz", 200),
        ("DELETE", "/v1/leaderboard/top", 405),
    ]
    for record in lines:
        doc = json.loads(JsonFormatter().format(record))
        assert doc["msg"] == "request" and doc["client"] == "127.0.0.1"
        assert isinstance(doc["duration_ms"], float) and 0 <= doc["duration_ms"] < 5000
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert TOKEN not in everything and "u42" not in everything  # no token, no query


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pomocore.http_api.access"]


def test_leaderboard_serve_reads_its_token_from_a_file(settings: Settings, tmp_path: Path) -> None:
    """`pomocore leaderboard serve` end to end: POMOCORE_API_TOKEN_FILE, the 401 and the
    200, and the access log as JSON lines on stderr, none of them with the token."""
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    log = tmp_path / "serve.log"
    env = {"POMOCORE_REDIS_URL": settings.redis_url, "POMOCORE_API_TOKEN_FILE": str(token_file)}
    with spawn_pomocore("leaderboard", env, "serve", "--port", str(port), log=log) as serve:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/healthz"), 30)
        top = f"{base}/v1/leaderboard/top?category=work&period=daily"
        assert _request(top)[0] == 401
        assert _request(top, f"Bearer {TOKEN}")[0] == 200
        wait_for(lambda: len(_access_lines(serve.output())) >= 3, 10)
        serve.stop(timeout_s=10)
    text = log.read_text()
    assert TOKEN not in text
    assert [(a["method"], a["path"], a["status"]) for a in _access_lines(text)] == [
        ("GET", "/healthz", 200),
        ("GET", "/v1/leaderboard/top", 401),
        ("GET", "/v1/leaderboard/top", 200),
    ]


def _access_lines(text: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [d for d in docs if d.get("logger") == "pomocore.http_api.access"]


def _answers(url: str) -> bool:
    try:
        return _request(url)[0] == 200
    except OSError:
        return False


def test_api_token_and_http_settings(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings.from_env({"POMOCORE_API_TOKEN_FILE": str(token_file)})
    assert settings.api_token == TOKEN
    assert settings.describe()["api_token"] == "***"
    with pytest.raises(ConfigError, match="POMOCORE_API_TOKEN"):
        Settings.from_env({"POMOCORE_API_TOKEN": "short"})
    with pytest.raises(ConfigError, match="POMOCORE_HTTP_MAX_CONNECTIONS"):
        Settings.from_env({"POMOCORE_HTTP_MAX_CONNECTIONS": "1"})
    with pytest.raises(ConfigError, match="POMOCORE_HTTP_REQUEST_TIMEOUT_S"):
        Settings.from_env({"POMOCORE_HTTP_REQUEST_TIMEOUT_S": "0"})
    limits = HttpLimits.from_settings(
        Settings.from_env({"POMOCORE_HTTP_MAX_CONNECTIONS": "64",
                           "POMOCORE_HTTP_REQUEST_TIMEOUT_S": "2.5"}), workers=3
    )  # fmt: skip
    assert (limits.max_connections, limits.request_timeout_s, limits.workers) == (64, 2.5, 3)
    assert PROBE_TIMEOUT_S <= LIVENESS_TIMEOUT_S
