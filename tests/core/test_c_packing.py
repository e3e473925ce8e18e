"""The Cluster client's connections pack commands with hiredis (core/connect.py): the
same bytes as redis-py's packer for every argument, the same error for a bad one."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from pomocore.core.connect import CPackingConnection, CPackingSSLConnection


class Level(enum.IntEnum):
    LOW = 1


def packed(connection: Connection, *args: Any) -> bytes | str:
    try:
        return b"".join(bytes(chunk) for chunk in connection.pack_command(*args))
    except DataError as exc:
        return f"DataError: {exc}"


ARGS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=False),  # (nan: repr 'nan' both ways, but nan != nan)
    st.booleans(),
    st.none(),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
    st.just(Level.LOW),
)


@given(st.sampled_from(["SET", b"SET", "CONFIG GET", b"CONFIG GET"]), st.lists(ARGS, max_size=8))
def test_packs_as_redis_py(name: Any, args: list[Any]) -> None:
    ours, theirs = CPackingConnection(), Connection()
    assert packed(ours, name, *args) == packed(theirs, name, *args)


def test_large_values_and_pipelines_pack_as_redis_py() -> None:
    ours, theirs = CPackingConnection(), Connection()
    commands = [("SET", "k", b"x" * 100_000), ("INCRBYFLOAT", "n", 0.1), ("GET", b"k")]
    assert b"".join(ours.pack_commands(commands)) == b"".join(theirs.pack_commands(commands))
    assert len(ours.pack_command("SET", "k", b"x" * 100_000)) == 1  # one buffer, built in C


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_another_encoding_keeps_redis_py_s_packer(encoding: str) -> None:
    ours, theirs = CPackingConnection(encoding=encoding), Connection(encoding=encoding)
    assert packed(ours, "SET", "k", "é") == packed(theirs, "SET", "k", "é")


def test_tls_variant_is_an_ssl_connection() -> None:
    assert issubclass(CPackingSSLConnection, SSLConnection)
    assert CPackingSSLConnection.pack_command is CPackingConnection.pack_command
