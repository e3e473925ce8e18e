"""Bounded: blocking calls that answer within a deadline, and HTTP servers whose threads
and sockets stay bounded whatever their clients do.

A scrape or a health check has a timeout of its own (Prometheus's scrape timeout, 10 s
by default; Docker's and Kubernetes' probe timeouts). A Redis or MongoDB that stops
answering (SIGSTOP, a network partition) holds a blocking client for its socket timeout
per command, longer than that over several commands. So the call runs in a worker
thread and the caller waits for it at most `timeout_s`: the HTTP answer is on time even
when the dependency is not (SingleFlight). And the HTTP server itself answers on time
however many clients connect and sit idle (BoundedHTTPServer).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Generic, NamedTuple, TypeVar, cast
from urllib.parse import urlsplit

from pomocore.core.settings import Settings

T = TypeVar("T")


class CallTimeout(TimeoutError):
    """The call did not finish within the caller's deadline (it may still be running)."""


class SingleFlight(Generic[T]):
    """Runs `fn` in a daemon thread, one call at a time; each caller waits at most its
    `timeout_s` for the result.

    A caller that arrives while a call is still running waits for that call instead of
    starting another: a dependency that hangs holds one thread, however often it is
    probed, and the next call starts once that one has ended (by its socket timeout).
    """

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self._name = name
        self._lock = threading.Lock()
        self._running: Future[T] | None = None

    def call(self, timeout_s: float) -> T:
        """`fn()`'s result or exception; CallTimeout when it takes longer than `timeout_s`."""
        with self._lock:
            future = self._running
            if future is None or future.done():
                future = Future()
                self._running = future
                threading.Thread(
                    target=self._run, args=(future,), name=self._name, daemon=True
                ).start()
        try:
            return future.result(timeout_s)
        except TimeoutError:  # concurrent.futures.TimeoutError is TimeoutError
            if not future.done():
                raise CallTimeout(f"no answer within {timeout_s:g} s") from None
        return future.result()  # it ended just now, or fn raised a TimeoutError itself

    def _run(self, future: Future[T]) -> None:
        try:
            future.set_result(self._fn())
        except BaseException as exc:
            future.set_exception(exc)


# --- HTTP servers -------------------------------------------------------------------------
#
# http.server's ThreadingHTTPServer gives every connection a thread of its own for as long
# as the client keeps it open: 1,500 idle sockets held 1,506 threads of a consumer, none
# closed after 20 s (issue #14 §4). Here one event-loop thread owns every socket: it reads
# each request head with a deadline counted from the accept (so a client that trickles its
# headers, slowloris, is closed like a silent one), keeps at most `max_connections` open,
# and only a complete request reaches one of `workers` threads. Threads are 1 + workers
# whatever clients do; sockets are at most `max_connections`.

# Connections accepted per readiness event of the listening socket. A probe's request is
# read one or two loop turns after its accept; while it waits, at most a few batches of new
# connections can be admitted, far fewer than `max_connections`, so a flood of idle sockets
# cannot evict a probe before its request is in (asyncio's own servers accept `backlog`,
# 100, per turn).
ACCEPT_BATCH = 16
# Connections the kernel completes before we accept them. With 128, opening 1,500 at once
# took 7.3 s (handshakes dropped while the queue was full, retried after 1 s); with 1,024,
# 0.12 s. The kernel caps it at net.core.somaxconn (4,096 on Linux >= 5.4).
LISTEN_BACKLOG = 1024
ACCEPT_RETRY_S = 0.5  # out of descriptors (EMFILE): stop accepting this long, then retry
WARN_EVERY_S = 60.0
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)
_FAILED = b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

log = logging.getLogger("pomocore.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one HTTP server may hold: open connections, the time a client has to send its
    request head (and again to read the answer), threads answering requests, head size."""

    max_connections: int = 256
    request_timeout_s: float = 5.0
    workers: int = 4
    max_head_bytes: int = 16 * 1024

    @classmethod
    def from_settings(cls, settings: Settings, workers: int) -> HttpLimits:
        """POMOCORE_HTTP_MAX_CONNECTIONS and POMOCORE_HTTP_REQUEST_TIMEOUT_S."""
        return cls(settings.http_max_connections, settings.http_request_timeout_s, workers)


@dataclass(slots=True)
class HttpStats:
    """Counts since start (written by the server's loop thread only)."""

    accepted: int = 0
    answered: int = 0
    evicted: int = 0  # closed to make room for a new connection (the bound was reached)
    timed_out: int = 0  # no complete request (or answer read) within the timeout
    too_large: int = 0  # a request head over max_head_bytes (431)


class BufferedRequestHandler(BaseHTTPRequestHandler):
    """A request handler over a request head already read into memory, answering into
    memory: the server's loop did the socket I/O, under its deadlines. One request per
    connection (HTTP/1.0: nothing is kept alive to sit idle)."""

    status = 0
    server_version = "pomocore"  # not BaseHTTP's, nor the Python version
    sys_version = ""

    def setup(self) -> None:
        self.rfile = io.BytesIO(cast(bytes, self.request))
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        pass  # the server sends what wfile holds

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.status = int(code)  # send_response's status, for the access log

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the server writes the access log (one structured line), if it keeps one


class _Answer(NamedTuple):
    data: bytes
    method: str
    path: str
    status: int


class _Connection(asyncio.Protocol):
    """One client socket, owned by the server's loop thread."""

    def __init__(self, server: BoundedHTTPServer, cid: int, client: str) -> None:
        self.server = server
        self.cid = cid
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.got_bytes = False  # a silent connection is the first one evicted
        self.state = "reading"  # then "working" (a worker answers), then "writing"
        self.done = False  # closed or forgotten: nothing more to do
        self.timer: asyncio.TimerHandle | None = None
        self.future: Future[_Answer] | None = None  # its request, queued for a worker
        self.head_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.done:  # evicted between its accept and now
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.state != "reading":
            return  # a request body, or a second request: not read (one per connection)
        self.got_bytes = True
        start = max(0, len(self.buf) - 3)
        self.buf += data
        end = _HEAD_END.search(self.buf, start)
        if (end.end() if end else len(self.buf)) > self.server.limits.max_head_bytes:
            self.server.too_large(self)
            return
        if end is None:
            return
        head = bytes(self.buf[: end.end()])
        self.buf = bytearray()
        self.server.dispatch(self, head)

    def eof_received(self) -> bool:
        return self.state != "reading"  # half-closed after its request: still answer it

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)

    def expire(self) -> None:
        self.server.expire(self)


def _request_path(head: bytes) -> str:
    words = head.split(b"\n", 1)[0].split()
    return words[1].split(b"?", 1)[0].decode("latin-1") if len(words) >= 2 else ""


def _client(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


class BoundedHTTPServer:
    """An HTTP server whose threads and sockets stay bounded whatever clients do.

    - One loop thread reads every request head; a connection that has not sent a whole
      head within `request_timeout_s` of its accept is closed, and so is one that has not
      read its answer within `request_timeout_s` of it being sent.
    - At most `max_connections` are open: a new one first closes the connection that has
      waited longest, a silent one before any other, so a new one (a probe's) always gets
      in and an idle flood only pushes out the flood.
    - Complete requests run on `workers` threads; a path in `inline_paths` (a liveness
      probe, cheap and never blocking) is answered on the loop thread itself, so probes
      never queue behind slow requests.
    - `access_log`: one structured line per answered request (method, path without its
      query, status, duration_ms, client); never a header, so never a credential.
    - `on_answer(path, seconds)`: called on the loop thread for each answered request
      with its path (query included) and its time from the whole head read to the answer
      handed to the socket, the wait for a worker included (what a client waits for once
      it has sent its request). Must be quick: it holds up every other connection.
    """

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BufferedRequestHandler],
        limits: HttpLimits,
        *,
        name: str,
        inline_paths: Collection[str] = (),
        access_log: logging.Logger | None = None,
        on_answer: Callable[[str, float], None] | None = None,
    ) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        self._sock.setblocking(False)
        self.server_address: tuple[str, int] = self._sock.getsockname()[:2]
        self.port = int(self.server_address[1])
        self.limits = limits
        self.name = name
        self.stats = HttpStats()
        self._handler = handler
        self._inline = frozenset(inline_paths)
        self._access_log = access_log
        self._on_answer = on_answer
        self._loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix=f"{name}-worker")
        self._live: dict[int, _Connection] = {}
        self._reading: dict[int, _Connection] = {}  # accept order: the oldest first
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._warned_at = -WARN_EVERY_S
        self._cleaned = False
        self._lock = threading.Lock()

    # --- life cycle (any thread) ---

    def start(self) -> BoundedHTTPServer:
        """Serve from a daemon thread of its own."""
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until close() (or KeyboardInterrupt)."""
        loop = self._loop
        loop.add_reader(self._sock.fileno(), self._accept)
        try:
            loop.run_forever()
        finally:
            self._cleanup()

    def open_connections(self) -> int:
        return len(self._live)

    def close(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(10)
        elif self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        else:
            self._cleanup()

    def _cleanup(self) -> None:
        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
        loop = self._loop
        try:
            loop.remove_reader(self._sock.fileno())
            for conn in list(self._live.values()):
                self._drop(conn)
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                loop.run_until_complete(asyncio.wait(list(self._tasks), timeout=1.0))
            loop.run_until_complete(asyncio.sleep(0))  # the transports' last callbacks
        finally:
            loop.close()
            self._sock.close()
            self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the loop thread ---

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE/ENFILE: no descriptor left; do not spin on it
                self._warn("accept failed; pausing accepts", error=type(exc).__name__)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_S, self._resume_accepting)
                return
            sock.setblocking(False)
            self._admit(sock, _client(address))

    def _resume_accepting(self) -> None:
        if not self._cleaned:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def _admit(self, sock: socket.socket, client: str) -> None:
        self.stats.accepted += 1
        if len(self._live) >= self.limits.max_connections:
            self._make_room()
        conn = _Connection(self, next(self._ids), client)
        self._live[conn.cid] = conn
        self._reading[conn.cid] = conn
        conn.timer = self._loop.call_later(self.limits.request_timeout_s, conn.expire)
        task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: conn, sock))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._connected(t, conn, sock))

    def _connected(self, task: asyncio.Task[Any], conn: _Connection, sock: socket.socket) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.forget(conn)
            sock.close()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for its request: a silent one
        first, else the oldest one open (still sending, queued for a worker or reading
        its answer). Each new connection, a probe's included, so always gets in."""
        victim = next((c for c in self._reading.values() if not c.got_bytes), None)
        if victim is None:
            victim = next(iter(self._live.values()))
        self.stats.evicted += 1
        self._warn("connection bound reached; closing the oldest connections")
        self._drop(victim)

    def dispatch(self, conn: _Connection, head: bytes) -> None:
        """A whole request head is in: answer it (inline or on a worker)."""
        self._reading.pop(conn.cid, None)
        conn.state = "working"
        conn.head_at = time.monotonic()
        if conn.transport is not None:
            conn.transport.pause_reading()
        if _request_path(head) in self._inline:
            self._send(conn, self._answer(head, conn.client))
            return
        conn.future = future = self._pool.submit(self._answer, head, conn.client)
        future.add_done_callback(lambda f: self._from_worker(conn, f))

    def _from_worker(self, conn: _Connection, future: Future[_Answer]) -> None:
        """(A worker thread) hand the answer to the loop thread."""
        with contextlib.suppress(RuntimeError):  # the server closed meanwhile
            self._loop.call_soon_threadsafe(self._send_result, conn, future)

    def _send_result(self, conn: _Connection, future: Future[_Answer]) -> None:
        if future.cancelled():
            self._drop(conn)
            return
        self._send(conn, future.result())

    def _send(self, conn: _Connection, answer: _Answer) -> None:
        if conn.done or conn.transport is None:
            return  # the client left, or the connection was closed meanwhile
        conn.state = "writing"
        self.stats.answered += 1
        conn.transport.write(answer.data)
        conn.transport.close()  # after the answer is flushed
        self._rearm(conn)  # a client that does not read its answer is dropped
        elapsed_s = time.monotonic() - conn.head_at
        if self._on_answer is not None:
            self._on_answer(answer.path, elapsed_s)
        if self._access_log is not None and answer.status:
            self._access_log.info(
                "request",
                extra={
                    "method": answer.method[:16],
                    "path": urlsplit(answer.path).path[:256],
                    "status": answer.status,
                    "duration_ms": round(elapsed_s * 1000, 3),
                    "client": conn.client,
                },
            )

    def too_large(self, conn: _Connection) -> None:
        self.stats.too_large += 1
        self._reading.pop(conn.cid, None)
        conn.state = "writing"
        conn.head_at = time.monotonic()
        if conn.transport is not None:
            conn.transport.pause_reading()
        self._send(conn, _Answer(_TOO_LARGE, "-", "-", 431))

    def expire(self, conn: _Connection) -> None:
        if conn.state == "reading":
            self.stats.timed_out += 1
        self._drop(conn)

    def forget(self, conn: _Connection) -> None:
        conn.done = True
        self._live.pop(conn.cid, None)
        self._reading.pop(conn.cid, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.future is not None:
            conn.future.cancel()  # still queued: no worker spends time on it
            conn.future = None

    def _drop(self, conn: _Connection) -> None:
        self.forget(conn)
        if conn.transport is not None:
            conn.transport.abort()

    def _rearm(self, conn: _Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = self._loop.call_later(self.limits.request_timeout_s, conn.expire)

    def _warn(self, message: str, **extra: Any) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = now
        stats = dataclasses.asdict(self.stats)
        log.warning(
            message,
            extra={"server": self.name, "max_connections": self.limits.max_connections,
                   **stats, **extra},
        )  # fmt: skip

    # --- the workers (or the loop thread, for inline paths) ---

    def _answer(self, head: bytes, client: str) -> _Answer:
        try:
            handler = self._handler(cast(Any, head), (client, 0), cast(Any, self))
        except Exception:
            log.exception("request handler failed", extra={"server": self.name})
            return _Answer(_FAILED, "-", "-", 500)
        return _Answer(
            cast(io.BytesIO, handler.wfile).getvalue(),
            getattr(handler, "command", None) or "-",
            getattr(handler, "path", None) or "-",
            handler.status,
        )
