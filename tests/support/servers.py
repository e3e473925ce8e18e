"""Servers of a test: start one for exactly as long as a fixture lasts, stall one
(SIGSTOP) for a block, point Settings at other servers, and give each test a MongoDB
database of its own."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Protocol, TypeVar

from pomocore.core.settings import Settings


class Server(Protocol):
    def start(self, timeout_s: float = ...) -> None: ...
    def close(self) -> None: ...


class Process(Protocol):
    proc: subprocess.Popen[bytes] | None


S = TypeVar("S", bound=Server)


@contextlib.contextmanager
def running(server: S) -> Iterator[S]:
    """Start `server`, and close it (files included) however the block ends."""
    server.start()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def stalled(server: Process) -> Iterator[None]:
    """The server's process is stopped (SIGSTOP) for the block: connections stay open and
    connecting still succeeds (the kernel accepts), but nothing is answered, like a hung
    server or a partition; SIGCONT after, however the block ends."""
    assert server.proc is not None, "start the server first"
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def fresh_db_name() -> str:
    """A database name no other test uses: tests share one MongoDB-wire server."""
    return f"t_{uuid.uuid4().hex[:12]}"


def with_servers(
    settings: Settings,
    redis_url: str | None = None,
    mongo_uri: str | None = None,
    **overrides: object,
) -> Settings:
    """`settings` pointed at other servers (a new MongoDB server gets a fresh database)."""
    values: dict[str, object] = dict(overrides)
    if redis_url:
        values["redis_url"] = redis_url
    if mongo_uri:
        values["mongo_uri"] = mongo_uri
        values["mongo_db"] = fresh_db_name()
    return dataclasses.replace(settings, **values)  # type: ignore[arg-type]
