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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Literal

Mode = Literal["pass", "latency", "reset", "blackhole"]
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
