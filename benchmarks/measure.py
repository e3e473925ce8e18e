"""What the benchmarks measure and how: acknowledgements and latencies in a consumer,
round trips, CPU and peak RSS of a process, Redis CPU, and the order statistics."""

from __future__ import annotations

import math
import resource
import time
from array import array
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio.connection as aconn
import redis.connection as sconn
from pymongo import monitoring


class Recorder:
    """What a consumer process reports: acks, last ack time, round trips, latencies."""

    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.acked = 0
        self.last_ack = 0.0
        self.first_start = 0.0
        self.redis_round_trips = 0
        self.mongo_round_trips = 0
        self.lat = array("d")
        # h: the same latencies again, by group ("llm": keys no shipped pattern decides)
        self.lat_groups: dict[str, array[float]] = {}
        self.extra: dict[str, Any] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    def acked_ids(self, ids: Sequence[bytes | str]) -> None:
        now = time.time()
        self.last_ack = now
        self.acked += len(ids)
        if self.latency:
            now_ms = now * 1000.0
            lat = self.lat
            for i in ids:
                s = i.decode() if isinstance(i, bytes) else i
                lat.append(now_ms - int(s.partition("-")[0]))

    def latency_group(self, group: str, entry_id: str, now_ms: float) -> None:
        """File one acknowledged entry's latency under `group` too."""
        lat = self.lat_groups.setdefault(group, array("d"))
        lat.append(now_ms - int(entry_id.partition("-")[0]))

    def reset_counters(self) -> None:
        self.redis_round_trips = 0
        self.mongo_round_trips = 0


def install_counters(rec: Recorder) -> None:
    """Count Redis round trips (one socket write = one request/pipeline) and MongoDB
    commands, for every client the process creates afterwards."""
    a_send = aconn.AbstractConnection.send_packed_command

    async def counted_a(self: Any, command: Any, check_health: bool = True) -> None:
        rec.redis_round_trips += 1
        await a_send(self, command, check_health)

    s_send = sconn.AbstractConnection.send_packed_command

    def counted_s(self: Any, command: Any, check_health: bool = True) -> None:
        rec.redis_round_trips += 1
        s_send(self, command, check_health)  # type: ignore[no-untyped-call]

    aconn.AbstractConnection.send_packed_command = counted_a  # type: ignore[method-assign]
    sconn.AbstractConnection.send_packed_command = counted_s  # type: ignore[method-assign]

    class Listener(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            rec.mongo_round_trips += 1

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    monitoring.register(Listener())


def peak_rss_kb() -> int:
    """Peak RSS of this process. Not ru_maxrss: on Linux that survives exec, so a child
    would report its parent's peak at fork time (here: the publisher's event lists)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_s() -> float:
    """User + system CPU seconds of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def redis_cpu_s(client: redis.Redis) -> float:
    """User + system CPU seconds of the Redis server (`INFO cpu`)."""
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[k])


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        return math.nan
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def cdf(sorted_lat: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """At most `points` (latency, fraction of events at or below it) pairs."""
    if not sorted_lat:
        return []
    n = len(sorted_lat)
    qs = sorted({min(n - 1, int(n * i / points)) for i in range(points)} | {n - 1})
    return [(round(float(sorted_lat[k]), 3), round((k + 1) / n, 5)) for k in qs]
