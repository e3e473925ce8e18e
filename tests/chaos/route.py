"""The forwarder's chaos run: `pomocore route` processes killed and stalled while producers
publish, then every published event looked for in the shards' streams.

Two `pomocore route` processes (one holds the lease, one stands by) move what a producer
publishes to the contract stream into six shard streams, while a second producer (the
producer kit, `pomocore.publish_many`) writes straight to the shard streams. A seeded
schedule injects faults: kill -9 of a forwarder (restarted after a moment, under a new
consumer name), SIGSTOP of one (the holder when it can be told) for longer than its lease,
then SIGCONT (it wakes up fenced off, after the standby took over), and, on a standalone
Valkey with AOF (appendfsync always), kill -9 and restart of Redis. The forwarders use a
one-second lease, so takeovers happen many times a run. Then everything is healed and
the route group drained, the forwarders stopped (SIGTERM: exit 0), and `check_routed`
compares the shard streams with what was published: each event exactly once, in its
user's shard, its fields unchanged. Which faults happen, in which order, is fixed by the
seed; exactly when one lands in a batch is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.cluster

import pomocore
from pomocore.core.keys import ROUTE_GROUP
from pomocore.core.settings import Settings
from pomocore.core.shards import shard_of_field
from pomocore.embedded import EmbeddedRedis
from pomocore.producer import prepare
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import ConsumerProcess, spawn_pomocore
from tests.support.servers import redis_cluster

ROUTE_FAULTS = ("kill_forwarder", "stall_forwarder")
# The forwarders reach Redis through proxies (one per cluster node: each node announces
# its proxy's port) that delay every chunk by PROXY_LATENCY_S: a batch takes a few round
# trips, so a fault often lands between a batch's FORWARD calls and its XACK (the window
# that makes repeats). The proxies also reset connections for a while: a FORWARD applied
# whose reply is lost.
PROXY_RESET = "proxy_reset"
KILL_REDIS = "kill_redis"  # (a standalone Valkey)
CLUSTER_FAULTS = (*ROUTE_FAULTS, PROXY_RESET)
STANDALONE_FAULTS = (*CLUSTER_FAULTS, KILL_REDIS)
PROXY_LATENCY_S = 0.01
SHARDS = 6
LEASE_S = 1.0
# What a producer meets while Redis restarts or a proxy resets (a Cluster client's own
# errors among them); it retries what is missing.
RETRIED = (redis.RedisError, OSError, redis.exceptions.RedisClusterException)
RAW_XRANGE = "return redis.call('XRANGE', KEYS[1], '-', '+')"

Fields = list[bytes]


@dataclass(frozen=True, slots=True)
class RouteChaosConfig:
    seed: int = 1
    events: int = 3000  # published to the contract stream
    kit_events: int = 600  # published by the producer kit straight to the shards
    publish_s: float = 10.0
    fault_every_s: float = 1.2
    forwarders: int = 2
    cluster: bool = False  # a 3-node cluster (no Redis kills) instead of one Valkey
    faults: tuple[str, ...] = STANDALONE_FAULTS
    drain_timeout_s: float = 60.0


@dataclass(slots=True)
class Published:
    n: int
    fields: Fields  # as XADD carried them
    shard: int  # where they must end up
    via: str  # "contract" or "kit"


@dataclass(slots=True)
class RouteChaosReport:
    published: int = 0
    faults: list[str] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    takeovers: int = 0  # "holding the lease" lines over all forwarder logs
    lost_leases: int = 0  # "lease lost" lines: a stalled holder fenced off, or lapsed
    drain_s: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> str:
        kinds: dict[str, int] = defaultdict(int)
        for f in self.faults:
            if f.startswith("t="):
                kinds[f.split("s ", 1)[1].split()[0]] += 1
        return (
            f"published={self.published} faults={len(self.faults)} {dict(kinds)} "
            f"takeovers={self.takeovers} lost_leases={self.lost_leases} "
            f"unexpected_exits={len(self.unexpected_exits)} violations={len(self.violations)} "
            f"drain_s={self.drain_s:.1f} wall_s={self.wall_s:.1f}"
        )


def generate(seed: int, events: int, kit_events: int, now_s: float) -> list[Published]:
    """Contract-stream events (some without a userId, some with a non-ASCII one, some with
    fields the contract does not define) and valid kit events; each with a unique `n`."""
    rng = random.Random(seed)
    users = [f"user-{i}" for i in range(60)] + ["ユーザー", "Ünïcode", "😀"]
    out = []
    for n in range(events):
        fields: Fields = []
        if rng.random() > 0.02:
            fields += [b"userId", rng.choice(users).encode()]
        fields += [b"app", b"Code", b"duration", b"12.5", b"timestamp", f"{now_s:.3f}".encode()]
        if rng.random() < 0.1:
            fields += [b"extra", rng.choice([b"x", b"\xff", b""])]
        fields += [b"n", str(n).encode()]
        user = fields[1] if fields[0] == b"userId" else None
        out.append(Published(n, fields, shard_of_field(user, SHARDS), "contract"))
    settings = Settings(shards=SHARDS)
    for n in range(events, events + kit_events):
        event = {"userId": rng.choice(users), "app": "Code", "duration": 3.0,
                 "timestamp": now_s, "n": str(n)}  # fmt: skip
        (prepared,) = prepare([event], settings)
        fields = [v for pair in prepared.items() for v in pair]
        out.append(Published(n, fields, shard_of_field(prepared[b"userId"], SHARDS), "kit"))
    return out


def check_routed(published: Sequence[Published], found: dict[int, list[Fields]]) -> list[str]:
    """What is wrong with the shard streams' entries (`found`: shard -> entries, each a
    flat field list): an event lost, duplicated, in another shard or changed, an entry
    nobody published. Empty: every event exactly once where it belongs."""
    where: dict[bytes, list[tuple[int, Fields]]] = defaultdict(list)
    unknown = []
    for shard, entries in found.items():
        for fields in entries:
            ns = [fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i] == b"n"]
            if len(ns) != 1:
                unknown.append(f"shard {shard}: an entry without one n: {fields[:8]!r}")
                continue
            where[ns[0]].append((shard, fields))
    violations = unknown
    expected = {str(p.n).encode(): p for p in published}
    for n, p in expected.items():
        copies = where.get(n, [])
        if not copies:
            violations.append(f"lost: n={p.n} ({p.via}, shard {p.shard})")
            continue
        if len(copies) > 1:
            violations.append(f"duplicated: n={p.n} ({p.via}) {len(copies)} times")
        for shard, fields in copies:
            if shard != p.shard:
                violations.append(f"wrong shard: n={p.n} in {shard}, not {p.shard}")
            if fields != p.fields:
                violations.append(f"changed: n={p.n}: {fields!r} != {p.fields!r}")
    for n in where.keys() - expected.keys():
        violations.append(f"never published: n={n!r}")
    return violations


class RouteChaosRun:
    def __init__(self, config: RouteChaosConfig, workdir: Path | None = None) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pomocore-route-chaos-"))
        self.report = RouteChaosReport()
        self.procs: dict[int, ConsumerProcess] = {}
        self.names: dict[int, str] = {}
        self.generation = 0
        self.stopped: set[int] = set()  # SIGSTOPped right now
        self.killed: set[int] = set()  # killed by the schedule (not an unexpected exit)
        self.redis: EmbeddedRedis | None = None
        self.proxies: list[FaultProxy] = []
        self.producer_error: BaseException | None = None
        self._producer_client: Any = None
        self.url = ""  # the producers' (a cluster's: through the proxies, as announced)
        self.t0 = 0.0

    # --- servers and clients ---

    @property
    def settings(self) -> Settings:
        base = Settings.from_dsn(self.url, shards=SHARDS)
        if self.cfg.cluster:
            return dataclasses.replace(base, redis_cluster=1, key_hash_tag="chaos")
        return base

    def _client(self) -> Any:
        if self.cfg.cluster:
            return redis.cluster.RedisCluster.from_url(self.url, socket_timeout=5)
        return redis.Redis.from_url(self.url, socket_timeout=5)

    # --- forwarders ---

    def _env(self, name: str) -> dict[str, str]:
        s = self.settings
        return {
            "POMOCORE_REDIS_URL": f"redis://{self.proxies[0].host_port}/0",
            "POMOCORE_REDIS_CLUSTER": str(s.redis_cluster),
            "POMOCORE_KEY_HASH_TAG": s.key_hash_tag,
            "POMOCORE_SHARDS": str(SHARDS),
            "POMOCORE_CONSUMER_NAME": name,
            "POMOCORE_BATCH_SIZE": "50",
            "POMOCORE_BLOCK_MS": "200",
            "POMOCORE_LOG_LEVEL": "INFO",
            "POMOCORE_LOG_FORMAT": "text",
        }

    def _start(self, index: int, name: str) -> None:
        log = self.workdir / f"route-{index}.log"
        self.procs[index] = spawn_pomocore(
            "route", self._env(name), "--lease-s", str(LEASE_S), log=log
        )
        self.names[index] = name

    def _watch(self) -> None:
        for index, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None and index not in self.killed:
                self.report.unexpected_exits.append(f"{self.names[index]} exited {code}")
                self._start(index, self._next_name(index))

    def _next_name(self, index: int) -> str:
        self.generation += 1
        return f"route-{index}-g{self.generation}"

    def _holder(self) -> int | None:
        """The forwarder that holds the lease, as far as the group tells: the consumer
        that read last (the others were removed when it took over)."""
        try:
            client = self._client()
            try:
                consumers = client.xinfo_consumers(self.settings.keys.stream_key, ROUTE_GROUP)
            finally:
                client.close()
        except RETRIED:
            return None
        if not consumers:
            return None
        latest = min(consumers, key=lambda c: c["idle"])["name"]
        latest = latest.decode() if isinstance(latest, bytes) else latest
        return next((i for i, name in self.names.items() if name == latest), None)

    # --- producers ---

    def _publish(self, events: list[Published], done: threading.Event) -> None:
        try:
            self._publish_all(events)
        except BaseException as exc:  # reported by the run, not lost with the thread
            self.producer_error = exc
        finally:
            if self._producer_client is not None:
                self._producer_client.close()
            done.set()

    def _publish_all(self, events: list[Published]) -> None:
        """Contract events with explicit ids (so a retry after a Redis restart adds only
        what is missing), and kit events through the producer kit, interleaved."""
        contract = [p for p in events if p.via == "contract"]
        kit = [p for p in events if p.via == "kit"]
        base_ms = int(time.time() * 1000)
        chunk = 50
        rounds = max(1, len(contract) // chunk)
        kit_per_round = -(-len(kit) // rounds)
        pause = self.cfg.publish_s / rounds
        for r in range(rounds + 1):
            part = contract[r * chunk : (r + 1) * chunk] if r < rounds else contract[r * chunk :]
            self._retrying(lambda retry, p=part: self._publish_contract(p, base_ms))
            kit_part = kit[r * kit_per_round : (r + 1) * kit_per_round]
            if kit_part:
                self._retrying(lambda retry, p=kit_part: self._publish_kit(p, retry))
            time.sleep(pause)

    def _retrying(self, call: Any) -> None:
        """`call(retry)` until it succeeds (`retry`: an earlier attempt failed)."""
        for attempt in range(600):
            try:
                call(attempt > 0)
                return
            except RETRIED:
                time.sleep(0.2)
        raise AssertionError("the producer could not publish for 2 minutes")

    def _publish_contract(self, part: list[Published], base_ms: int) -> None:
        if not part:
            return
        key = self.settings.keys.stream_key
        with self._producer() as client:
            ids = {p.n: f"{base_ms}-{p.n + 1}" for p in part}
            present = {e.decode() for e, _ in client.xrange(key, ids[part[0].n], ids[part[-1].n])}
            pipe = client.pipeline(transaction=False)
            for p in part:
                if ids[p.n] not in present:
                    pipe.execute_command("XADD", key, ids[p.n], *p.fields)
            pipe.execute()

    def _publish_kit(self, part: list[Published], retry: bool) -> None:
        """`publish_many` is at least once: after a failure, publish what is missing."""
        with self._producer() as client:
            missing = self._missing(client, part) if retry else part
            events = [dict(zip(p.fields[0::2], p.fields[1::2], strict=True)) for p in missing]
            as_text = [{k.decode(): v.decode() for k, v in e.items()} for e in events]
            try:
                pomocore.publish_many(client, as_text, settings=self.settings)
            except pomocore.BackendError as exc:
                raise redis.ConnectionError(str(exc)) from exc

    @contextlib.contextmanager
    def _producer(self) -> Iterator[Any]:
        """The producers' client, kept between calls; dropped after a failure."""
        if self._producer_client is None:
            self._producer_client = self._client()
        try:
            yield self._producer_client
        except RETRIED:
            self._producer_client.close()
            self._producer_client = None
            raise

    def _missing(self, client: Any, part: list[Published]) -> list[Published]:
        found: set[bytes] = set()
        for shard in {p.shard for p in part}:
            for _, fields in client.xrange(self.settings.shard_keys(shard).stream_key):
                found.add(fields.get(b"n", b""))
        return [p for p in part if str(p.n).encode() not in found]

    # --- faults ---

    def _schedule(self) -> list[tuple[float, str]]:
        faults = self.cfg.faults
        n = max(len(faults), int(self.cfg.publish_s / self.cfg.fault_every_s))
        kinds = list(faults) + [self.rng.choice(faults) for _ in range(n - len(faults))]
        self.rng.shuffle(kinds)
        step = self.cfg.publish_s / (n + 1)
        return [(step * (i + 1) + self.rng.uniform(-0.3, 0.3) * step, k)
                for i, k in enumerate(kinds)]  # fmt: skip

    def _note(self, text: str) -> None:
        self.report.faults.append(f"t={time.monotonic() - self.t0:5.1f}s {text}")

    def _inject(self, kind: str) -> None:
        rng = self.rng
        if kind == "kill_forwarder":
            index = self._pick()
            self.killed.add(index)
            self.procs[index].kill()
            self.stopped.discard(index)
            delay = rng.uniform(0.1, 0.8)
            name = self._next_name(index)
            self._note(
                f"kill_forwarder {self.names[index]} -9; restart as {name} after {delay:.1f}s"
            )
            time.sleep(delay)
            self._start(index, name)
            self.killed.discard(index)
        elif kind == "stall_forwarder":
            index = self._pick()
            stall = rng.uniform(1.5, 3.0) * LEASE_S
            self._note(f"stall_forwarder {self.names[index]} SIGSTOP for {stall:.1f}s")
            os.kill(self.procs[index].proc.pid, signal.SIGSTOP)
            self.stopped.add(index)
            time.sleep(stall)
            os.kill(self.procs[index].proc.pid, signal.SIGCONT)
            self.stopped.discard(index)
        elif kind == PROXY_RESET:
            span = rng.uniform(0.1, 0.5)
            self._note(f"proxy_reset for {span:.1f}s")
            for proxy in self.proxies:
                proxy.set_mode("reset")
            time.sleep(span)
            for proxy in self.proxies:
                proxy.set_mode("latency", PROXY_LATENCY_S)
        elif kind == KILL_REDIS and self.redis is not None:
            down = rng.uniform(0.3, 1.2)
            self._note(f"kill_redis -9, down {down:.1f}s")
            self.redis.kill()
            time.sleep(down)
            self.redis.start()

    def _pick(self) -> int:
        """The holder, two times in three (when it can be told), else any forwarder."""
        holder = self._holder() if self.rng.random() < 2 / 3 else None
        return holder if holder is not None else self.rng.randrange(self.cfg.forwarders)

    # --- the run ---

    def run(self) -> RouteChaosReport:
        started = time.monotonic()
        with ExitStack() as stack:
            if self.cfg.cluster:
                nodes = stack.enter_context(redis_cluster(self.workdir / "cluster"))
                ports = [n.port for n in nodes]
            else:
                self.redis = EmbeddedRedis(self.workdir / "redis", appendonly=True)
                stack.callback(self.redis.close)
                self.redis.start()
                ports = [self.redis.port]
            for port in ports:
                proxy = FaultProxy(port)
                stack.callback(proxy.close)
                proxy.start()
                proxy.set_mode("latency", PROXY_LATENCY_S)
                self.proxies.append(proxy)
            if self.cfg.cluster:
                _announce(ports, [p.port for p in self.proxies])
                self.url = f"redis://{self.proxies[0].host_port}"
            else:
                self.url = self.redis.url if self.redis else ""
            try:
                self._run()
            finally:
                for index, proc in self.procs.items():
                    if index in self.stopped:
                        os.kill(proc.proc.pid, signal.SIGCONT)
                    proc.kill()
        self.report.wall_s = time.monotonic() - started
        if self.report.violations or self.report.unexpected_exits or os.environ.get(
            "POMOCORE_CHAOS_KEEP"
        ):
            self.report.faults.append(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.report

    def _run(self) -> None:
        published = generate(self.cfg.seed, self.cfg.events, self.cfg.kit_events, time.time())
        self.report.published = len(published)
        for index in range(self.cfg.forwarders):
            self._start(index, self._next_name(index))
        self._wait_started()  # (faults land on running forwarders, not on their start-up)
        done = threading.Event()
        producer = threading.Thread(target=self._publish, args=(published, done), daemon=True)
        self.t0 = time.monotonic()
        producer.start()
        for at, kind in self._schedule():
            while time.monotonic() - self.t0 < at:
                self._watch()
                time.sleep(0.05)
            self._watch()
            self._inject(kind)
        producer.join(self.cfg.publish_s * 4 + 60)
        assert done.is_set(), "producer did not finish"
        if self.producer_error is not None:
            raise AssertionError("the producer failed") from self.producer_error
        drain_started = time.monotonic()
        stable = 0
        deadline = drain_started + self.cfg.drain_timeout_s
        while time.monotonic() < deadline and stable < 3:
            self._watch()
            stable = stable + 1 if self._route_state() == (0, 0) else 0
            time.sleep(0.2)
        self.report.drain_s = time.monotonic() - drain_started
        if stable < 3:
            self.report.violations.append(f"not drained: route group {self._route_state()}")
        self._wait_started()
        for proc in self.procs.values():
            proc.terminate()
        for index, proc in self.procs.items():
            code = proc.wait(30)
            if code != 0:
                self.report.unexpected_exits.append(f"{self.names[index]} stopped with {code}")
        self.report.violations += check_routed(published, self._shard_entries())
        self._count_logs()

    def _wait_started(self, timeout_s: float = 20.0) -> None:
        """Until each forwarder restarted lately is up (its signal handlers installed): a
        SIGTERM during its start-up would end it as the default action does."""
        deadline = time.monotonic() + timeout_s
        for index, name in self.names.items():
            log, started = self.workdir / f"route-{index}.log", f"consumer={name} "
            while time.monotonic() < deadline:
                if any("route: started" in line and started in line for line in _lines(log)):
                    break
                time.sleep(0.05)

    def _route_state(self) -> tuple[int, int]:
        try:
            client = self._client()
            try:
                groups = client.xinfo_groups(self.settings.keys.stream_key)
            finally:
                client.close()
        except RETRIED:
            return -1, -1
        for g in groups:
            if g["name"] in (ROUTE_GROUP, ROUTE_GROUP.encode()):
                return int(g.get("lag") or 0), int(g["pending"])
        return -1, -1

    def _shard_entries(self) -> dict[int, list[Fields]]:
        client = self._client()
        try:
            out = {}
            for i in range(SHARDS):  # (through a script: redis-py would make dicts of them)
                raw = client.eval(RAW_XRANGE, 1, self.settings.shard_keys(i).stream_key)
                out[i] = [list(fields) for _, fields in raw]
            return out
        finally:
            client.close()

    def _count_logs(self) -> None:
        for path in self.workdir.glob("route-*.log"):
            for line in _lines(path):
                self.report.takeovers += "holding the lease" in line
                self.report.lost_leases += "lease lost" in line


def _announce(ports: list[int], proxy_ports: list[int], timeout_s: float = 30.0) -> None:
    """Each cluster node announces its proxy's port; until every node's CLUSTER SLOTS says
    so (gossip carries it), so every client reaches the nodes through the proxies."""
    clients = [redis.Redis(port=port) for port in ports]
    try:
        for client, proxy_port in zip(clients, proxy_ports, strict=True):
            client.config_set("cluster-announce-port", proxy_port)
        deadline = time.monotonic() + timeout_s
        while True:
            seen = [{r[2][1] for r in c.execute_command("CLUSTER", "SLOTS")} for c in clients]
            if all(s == set(proxy_ports) for s in seen):
                return
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
    finally:
        for client in clients:
            client.close()


def _lines(path: Path) -> Iterator[str]:
    yield from path.read_text(errors="replace").splitlines()
