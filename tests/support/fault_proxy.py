"""A tiny loopback TCP proxy that injects network faults (chaos suite, outage tests).

    proxy = FaultProxy(target_port)   # listens on proxy.port, forwards to target_port
    proxy.start()
    proxy.set_mode("latency", latency_s=0.2)   # every chunk delayed, order kept
    proxy.set_mode("reset")       # open connections reset (RST), new ones reset on accept
    proxy.set_mode("blackhole")   # bytes swallowed both ways, nothing answered
    proxy.set_mode("pass")        # normal; connections left blackholed are reset
    proxy.retarget(other_port)    # new connections go there; open ones stay (a failover)
    proxy.close()

It runs its own event loop in a daemon thread so synchronous test code can drive it.
Leaving blackhole resets the blackholed connections: bytes they lost cannot be resent,
as a real TCP connection would eventually time out.

`MongoFaultProxy` also reads the MongoDB wire protocol, for faults only a replica set
produces: `set_mode("write_concern_error")` makes every write reply say what a primary
says when its secondaries are down (writeConcernError, code 64, wtimeout); the write
itself is applied, as it is on that primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any, Literal

import bson

Mode = Literal["pass", "latency", "reset", "blackhole", "write_concern_error"]
CHUNK = 65536


class FaultProxy:
    def __init__(self, target_port: int, port: int = 0, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = port
        self.mode: Mode = "pass"
        self.latency_s = 0.0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._blackholed: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.resets = 0

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        fut.result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_mode(self, mode: Mode, latency_s: float = 0.0) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._set_mode(mode, latency_s), self.loop)
        fut.result(10)

    async def _set_mode(self, mode: Mode, latency_s: float) -> None:
        previous, self.mode, self.latency_s = self.mode, mode, latency_s
        if mode == "reset":
            for client, upstream in list(self._conns):
                self._reset(client)
                if upstream is not None:
                    self._reset(upstream)
        elif previous == "blackhole" and mode != "blackhole":
            for writer in list(self._blackholed):
                self._reset(writer)
            self._blackholed.clear()

    def retarget(self, target_port: int) -> None:
        """Forward new connections to `target_port`, as a name moved by a failover does:
        connections already open still reach the old server."""
        self.target_port = target_port

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        self.resets += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            self._reset(writer)
            return
        upstream_w: asyncio.StreamWriter | None = None
        if self.mode == "blackhole":
            self._blackholed.add(writer)
            await self._swallow(reader)
            return
        try:
            up_r, upstream_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._reset(writer)
            return
        pair = (writer, upstream_w)
        self._conns.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, upstream_w, writer),
                self._pump(up_r, writer, upstream_w),
                return_exceptions=True,
            )
        finally:
            self._conns.discard(pair)
            for w in (writer, upstream_w):
                w.transport.abort()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while await reader.read(CHUNK):
                pass

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        source: asyncio.StreamWriter,
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.mode == "blackhole":
                    self._blackholed.add(source)
                    continue  # swallowed
                if self.mode == "latency" and self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for client, upstream in list(self._conns):
                client.transport.abort()
                if upstream is not None:
                    upstream.transport.abort()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


OP_MSG = 2013
CHECKSUM_PRESENT = 1
WRITE_COMMANDS = frozenset({"insert", "update", "delete"})
WTIMEOUT = {
    "code": 64,
    "codeName": "WriteConcernFailed",
    "errmsg": "waiting for replication timed out",
    "errInfo": {"wtimeout": True},
}


class MongoFaultProxy(FaultProxy):
    """A FaultProxy that forwards whole MongoDB wire messages (OP_MSG), so that it can
    rewrite the replies to write commands (mode "write_concern_error")."""

    def __init__(self, target_port: int, port: int = 0, target_host: str = "127.0.0.1") -> None:
        super().__init__(target_port, port, target_host)
        self._write_requests: set[int] = set()  # request ids of insert/update/delete
        self.write_concern_errors = 0

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        source: asyncio.StreamWriter,
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(16)
                length = struct.unpack_from("<i", header)[0]
                body = await reader.readexactly(length - 16)
                if self.mode == "blackhole":
                    self._blackholed.add(source)
                    continue  # swallowed
                if self.mode == "latency" and self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                writer.write(self._rewrite(header, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, OSError):
            pass  # closed or reset: end this direction like FaultProxy does
        finally:
            writer.transport.abort()

    def _rewrite(self, header: bytes, body: bytes) -> bytes:
        """The message to forward: a reply to a write gets a writeConcernError in that mode."""
        _, request_id, response_to, op = struct.unpack("<iiii", header)
        flags = struct.unpack_from("<I", body)[0]
        if op != OP_MSG or flags & CHECKSUM_PRESENT or body[4] != 0:
            return header + body  # only a plain OP_MSG starting with its body section
        size = struct.unpack_from("<i", body, 5)[0]
        doc: dict[str, Any] = bson.decode(body[5 : 5 + size])
        if response_to == 0:  # a request: remember the writes
            if next(iter(doc), None) in WRITE_COMMANDS:
                self._write_requests.add(request_id)
            return header + body
        if response_to not in self._write_requests:
            return header + body
        self._write_requests.discard(response_to)
        if self.mode != "write_concern_error" or doc.get("ok") != 1:
            return header + body
        doc["writeConcernError"] = WTIMEOUT
        self.write_concern_errors += 1
        new_body = body[:5] + bson.encode(doc) + body[5 + size :]
        return struct.pack("<iiii", 16 + len(new_body), request_id, response_to, op) + new_body
