"""The chaos run: real servers, consumer processes, a producer, and scheduled faults.

Valkey with AOF (appendfsync always) and the MongoDB-wire server run on loopback; the
consumers (`python -m pomocore.cli run`) reach both through fault proxies. While the
producer publishes, a seeded schedule injects faults: kill -9 of a consumer (restarted
under the same name, which re-reads its pending list, or a new one, which leaves the
entries for XAUTOCLAIM), kill -9 and restart of Redis, kill -9 and restart of MongoDB,
and proxy latency, connection resets and blackholes, and Redis answering errors for a
while: read-only (a FAILOVER to a replica and back) and out of memory (maxmemory);
runs that list `stall_mongo` also stop MongoDB (SIGSTOP) for longer than the reclaim
cycle, and a run with `stall_burst` ends with a burst published into the drained group
while MongoDB is stopped (the lanes that do not hold it are free to reclaim it). Then
everything is healed, the group drained, the consumers stopped, and the checker compares
what the servers hold with what was published.

Which faults happen, in which order, is fixed by the seed; exactly when a fault lands
in a batch is not (that is the point), and the invariants must hold for every timing.

With `llm=True` the consumers also ask a fake LLM for what the patterns leave undecided.
It answers one of two labels at random, and half of its answers come after the
consumers' timeout: an event's decision then changes between attempts (a late answer
remembered, the circuit opening and closing, the reclassifier's corrections, learned
patterns reloaded), and between consumers, while the faults make batches retry.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from tests.chaos.checker import Checker, Published, generate
from tests.support.fake_llm import Behaviour, FakeLLM, Item, Request
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import ConsumerProcess, run_cli, spawn_consumer
from tests.support.redis_faults import oom_window, read_only_window
from tests.support.streams import group_state

FAULT_KINDS = (
    "kill_consumer",
    "kill_redis",
    "proxy_latency",
    "kill_mongo",
    "proxy_reset",
    "proxy_blackhole",
    "redis_read_only",
    "redis_oom",
)
# What Redis answers in a read-only or OOM window; the producer retries, as on a reset.
PRODUCER_RETRIES = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    OSError,
)
LLM_LABELS = ("Education", "Entertainment")  # a work category and another
LLM_TIMEOUT_S = 0.5
LLM_LATE_SHARE = 0.5  # answers that arrive after the timeout
# SIGSTOP MongoDB for 2.5-4 reclaim idles, then SIGCONT or kill -9 and restart: the
# batches held meanwhile must stay owned (issue #13 §4), not be reclaimed again and again.
STALL_MONGO = "stall_mongo"
RECLAIM_IDLE_MS = 2000
BURST_STALL_IDLES = 4  # the final stall of a run with `stall_burst`, in reclaim idles


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    seed: int = 1
    events: int = 4000
    publish_s: float = 14.0
    consumers: int = 2
    fault_every_s: float = 1.8
    drain_timeout_s: float = 90.0
    chunk: int = 50
    leaderboard_mode: str = "exact"  # derived: weekly/monthly keys rebuilt every 0.5 s
    llm: bool = False  # a fake LLM, late half the time, for what patterns leave undecided
    distinct_variants: int = 40  # keys per workload template (more: more keys to ask about)
    faults: tuple[str, ...] = FAULT_KINDS  # each at least once, the rest drawn from them
    max_deliveries: int = 50
    stall_burst: int = 0  # events published at the end while MongoDB is stopped


@dataclass(slots=True)
class ChaosReport:
    published: int = 0
    rejected: int = 0
    faults: list[str] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    drain_s: float = 0.0
    wall_s: float = 0.0
    consumer_warnings: dict[str, int] = field(default_factory=dict)
    llm_requests: int = 0
    llm_late: int = 0

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for f in self.faults:
            if not f.startswith("t="):
                continue
            kind = f.split("s ", 1)[1].split()[0]
            counts[kind] = counts.get(kind, 0) + 1
        llm = f" llm_requests={self.llm_requests} late={self.llm_late}" if self.llm_requests else ""
        return (
            f"published={self.published} rejected={self.rejected} faults={len(self.faults)} "
            f"{counts} unexpected_exits={len(self.unexpected_exits)} "
            f"violations={len(self.violations)} drain_s={self.drain_s:.1f} "
            f"wall_s={self.wall_s:.1f} consumer_logs={self.consumer_warnings}{llm}"
        )


class ChaosRun:
    def __init__(self, config: ChaosConfig, workdir: Path | None = None) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pomocore-chaos-"))
        self.redis = EmbeddedRedis(self.workdir / "redis", appendonly=True)
        self.replica = EmbeddedRedis(self.workdir / "replica")  # a read-only window's target
        self.mongo = EmbeddedMongo(self.workdir / "mongo")
        self.redis_proxy: FaultProxy | None = None
        self.mongo_proxy: FaultProxy | None = None
        self.procs: dict[int, ConsumerProcess] = {}
        self.names: dict[int, str] = {}
        self.generation = 0
        self.report = ChaosReport()
        self.t0 = 0.0
        self.killed: set[int] = set()
        self.llm: FakeLLM | None = None

    # --- processes ---

    @property
    def settings(self) -> Settings:
        return Settings.from_dsn(
            self.redis.url, self.mongo.url, mongo_db="chaos", consumer_name="checker"
        )

    def _consumer_env(self, name: str) -> dict[str, str]:
        assert self.redis_proxy and self.mongo_proxy
        return {
            "POMOCORE_REDIS_URL": f"redis://{self.redis_proxy.host_port}/0",
            "POMOCORE_MONGO_URI": f"mongodb://{self.mongo_proxy.host_port}/",
            "POMOCORE_MONGO_DB": "chaos",
            "POMOCORE_CONSUMER_NAME": name,
            "POMOCORE_BATCH_SIZE": "100",
            "POMOCORE_BLOCK_MS": "200",
            "POMOCORE_LINGER_MS": "5",
            "POMOCORE_RECLAIM_IDLE_MS": str(RECLAIM_IDLE_MS),
            "POMOCORE_MAX_DELIVERIES": str(self.cfg.max_deliveries),
            "POMOCORE_MONGO_RETRY_MAX": "2",
            "POMOCORE_MONGO_TIMEOUT_MS": str(RECLAIM_IDLE_MS // 2),
            "POMOCORE_SHUTDOWN_TIMEOUT_S": "15",
            "POMOCORE_LOG_LEVEL": "WARNING",
            "POMOCORE_LEADERBOARD_MODE": self.cfg.leaderboard_mode,
            "POMOCORE_DERIVED_REFRESH_S": "0.5",
            **self._llm_env(),
        }

    def _llm_env(self) -> dict[str, str]:
        if self.llm is None:
            return {}
        return {
            "POMOCORE_LLM_BASE_URL": self.llm.url,
            "POMOCORE_LLM_API_KEY": "chaos",
            "POMOCORE_LLM_TIMEOUT_S": str(LLM_TIMEOUT_S),
            "POMOCORE_LLM_OPEN_CIRCUIT_S": "1.0",
            "POMOCORE_LLM_CALLS_PER_MIN": "100000",
            "POMOCORE_LLM_TOKENS_PER_MIN": "100000000",
        }

    # --- the LLM ---

    def _start_llm(self) -> None:
        """The fake LLM: a random label of LLM_LABELS per item, late LLM_LATE_SHARE of the
        time (its own seeded generators: the fault schedule stays what the seed says)."""
        labels = random.Random(self.cfg.seed + 1)
        timing = random.Random(self.cfg.seed + 2)

        def rule(item: Item) -> str:
            return labels.choice(LLM_LABELS)

        def choose(request: Request) -> Behaviour:
            if timing.random() < LLM_LATE_SHARE:
                self.report.llm_late += 1
                return FakeLLM.slow(LLM_TIMEOUT_S + timing.uniform(0.1, 1.0))
            return FakeLLM.ok()

        self.llm = FakeLLM(rule=rule)
        self.llm.choose = choose
        self.llm.start()

    def _start_consumer(self, index: int, name: str) -> None:
        log = self.workdir / f"consumer-{name}.log"
        self.procs[index] = spawn_consumer(self._consumer_env(name), log=log)
        self.names[index] = name

    def _watch_consumers(self) -> None:
        for index, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None and index not in self.killed:
                self.report.unexpected_exits.append(f"{self.names[index]} exited {code}")
                self._start_consumer(index, self.names[index])

    # --- producer ---

    def _publish(self, events: list[Published], stop: threading.Event) -> None:
        """`events` (ids set already: `_number`), a chunk at a time over `publish_s`."""
        key = self.settings.keys.stream_key
        pause = self.cfg.publish_s / max(1, len(events) / self.cfg.chunk)
        for i in range(0, len(events), self.cfg.chunk):
            self._publish_chunk(key, events[i : i + self.cfg.chunk])
            time.sleep(pause)
        stop.set()

    @staticmethod
    def _number(events: list[Published]) -> None:
        """Entry ids in publishing order, from now (XADD takes them as given)."""
        base_ms = int(time.time() * 1000)
        for n, p in enumerate(events, start=1):
            p.entry_id = f"{base_ms}-{n}"

    def _publish_chunk(self, key: str, chunk: list[Published]) -> None:
        while True:  # idempotent: after a failure, publish what is missing
            try:
                # One MULTI/EXEC per chunk, and no retries by redis-py underneath: a
                # chunk is all there or not at all. In a plain pipeline an OOM or
                # read-only window that closed mid-chunk left its first XADDs refused
                # and the later ones in, and XADD of an id below the stream's last
                # one is refused for good (the producer thread died on it).
                client = redis.Redis.from_url(
                    self.redis.url, socket_timeout=5, retry=Retry(NoBackoff(), 0)
                )
                try:
                    present = client.xrange(key, chunk[0].entry_id, chunk[-1].entry_id)
                    if not present:
                        pipe = client.pipeline(transaction=True)
                        for p in chunk:
                            pipe.xadd(key, dict(p.fields), id=p.entry_id)  # type: ignore[arg-type]
                        pipe.execute()
                finally:
                    client.close()
                return
            except PRODUCER_RETRIES:
                time.sleep(0.2)

    # --- faults ---

    def _schedule(self) -> list[tuple[float, str]]:
        faults = self.cfg.faults
        n = max(len(faults), int(self.cfg.publish_s / self.cfg.fault_every_s))
        kinds = list(faults) + [self.rng.choice(faults) for _ in range(n - len(faults))]
        self.rng.shuffle(kinds)
        step = self.cfg.publish_s / (n + 1)
        return [
            (step * (i + 1) + self.rng.uniform(-0.3, 0.3) * step, k) for i, k in enumerate(kinds)
        ]

    def _note(self, text: str) -> None:
        self.report.faults.append(f"t={time.monotonic() - self.t0:5.1f}s {text}")

    def _kill_consumer(self) -> None:
        rng = self.rng
        index = rng.randrange(self.cfg.consumers)
        self.killed.add(index)
        self.procs[index].kill()
        same = rng.random() < 0.5
        if not same:
            self.generation += 1
        name = self.names[index] if same else f"chaos-{index}-g{self.generation}"
        delay = rng.uniform(0.2, 1.2)
        self._note(f"kill_consumer {self.names[index]} -9; restart as {name} after {delay:.1f}s")
        time.sleep(delay)
        self._start_consumer(index, name)
        self.killed.discard(index)

    def _inject(self, kind: str) -> None:
        rng = self.rng
        assert self.redis_proxy and self.mongo_proxy
        if kind == "kill_consumer":
            self._kill_consumer()
        elif kind == "kill_redis":
            down = rng.uniform(0.3, 1.5)
            self._note(f"kill_redis -9, down {down:.1f}s")
            self.redis.kill()
            time.sleep(down)
            self.redis.start()
        elif kind in ("redis_read_only", "redis_oom"):
            self._redis_window(kind, rng.uniform(1.0, 3.0))
        elif kind == "kill_mongo":
            down = rng.uniform(0.5, 2.0)
            self._note(f"kill_mongo -9, down {down:.1f}s")
            self.mongo.kill()
            time.sleep(down)
            self.mongo.start()
        elif kind == STALL_MONGO:
            self._stall_mongo()
        else:
            proxy, which = rng.choice(((self.redis_proxy, "redis"), (self.mongo_proxy, "mongo")))
            if kind == "proxy_latency":
                latency, span = rng.uniform(0.02, 0.2), rng.uniform(1.0, 2.5)
                self._note(f"proxy_latency {which} {latency * 1000:.0f}ms for {span:.1f}s")
                proxy.set_mode("latency", latency)
            elif kind == "proxy_reset":
                span = rng.uniform(0.1, 0.8)
                self._note(f"proxy_reset {which} for {span:.1f}s")
                proxy.set_mode("reset")
            else:
                span = rng.uniform(1.0, 3.0)
                self._note(f"proxy_blackhole {which} for {span:.1f}s")
                proxy.set_mode("blackhole")
            time.sleep(span)
            proxy.set_mode("pass")

    def _stall_mongo(self) -> None:
        stall = self.rng.uniform(2.5, 4.0) * RECLAIM_IDLE_MS / 1000
        down = self.rng.uniform(0.5, 2.0) if self.rng.random() < 0.5 else 0.0
        then = f"kill -9, down {down:.1f}s" if down else "SIGCONT"
        self._note(f"stall_mongo SIGSTOP for {stall:.1f}s, then {then}")
        assert self.mongo.proc is not None
        os.kill(self.mongo.proc.pid, signal.SIGSTOP)
        time.sleep(stall)
        if not down:
            os.kill(self.mongo.proc.pid, signal.SIGCONT)
            return
        self.mongo.kill()  # (SIGKILL ends a stopped process too)
        time.sleep(down)
        self.mongo.start()

    def _burst_while_stalled(self, burst: list[Published]) -> None:
        """Into a drained group, MongoDB stopped, then a burst: the lanes that read it
        hold it for BURST_STALL_IDLES reclaim idles while the other lanes, with nothing to
        read, are free to reclaim it (a quiet moment in an outage). Held batches must stay
        owned: taken over twice, a batch goes past MAX_DELIVERIES=2 (issue #13 §4)."""
        stall = BURST_STALL_IDLES * RECLAIM_IDLE_MS / 1000
        self._note(f"stall_mongo SIGSTOP for {stall:.1f}s with a burst of {len(burst)} events")
        assert self.mongo.proc is not None
        os.kill(self.mongo.proc.pid, signal.SIGSTOP)
        try:
            key = self.settings.keys.stream_key
            for i in range(0, len(burst), self.cfg.chunk):
                self._publish_chunk(key, burst[i : i + self.cfg.chunk])
            time.sleep(stall)
        finally:
            os.kill(self.mongo.proc.pid, signal.SIGCONT)

    def _redis_window(self, kind: str, span: float) -> None:
        """Redis answers READONLY (the consumers' server is a replica: a FAILOVER to
        `self.replica` and back, nothing lost) or OOM for `span` seconds."""
        if kind == "redis_read_only":
            self._note(f"redis_read_only (FAILOVER to a replica and back) for {span:.1f}s")
            window = read_only_window(self.redis, self.replica)
        else:
            self._note(f"redis_oom (maxmemory 1) for {span:.1f}s")
            window = oom_window(self.redis)
        with window:
            time.sleep(span)

    # --- the run ---

    def run(self) -> ChaosReport:
        started = time.monotonic()
        self.redis.start()
        self.replica.start()
        self.mongo.start()
        self.redis_proxy = FaultProxy(self.redis.port)
        self.mongo_proxy = FaultProxy(self.mongo.port)
        self.redis_proxy.start()
        self.mongo_proxy.start()
        if self.cfg.llm:
            self._start_llm()
        try:
            return self._run(started)
        finally:
            for proc in self.procs.values():
                proc.kill()
            if self.llm is not None:
                self.report.llm_requests = self.llm.calls
                self.llm.stop()
            self.redis_proxy.close()
            self.mongo_proxy.close()
            self.redis.close()
            self.replica.close()
            self.mongo.close()
            self._keep_or_remove_workdir()

    def _keep_or_remove_workdir(self) -> None:
        if (
            self.report.violations
            or self.report.unexpected_exits
            or os.environ.get("POMOCORE_CHAOS_KEEP")
        ):
            self.report.faults.append(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # hooks a run over other servers (tests/chaos/shard_run.py) replaces
    def _generate(self) -> list[Published]:
        cfg = self.cfg
        return generate(cfg.seed, cfg.events, time.time(), distinct_variants=cfg.distinct_variants)

    def _wait_consumers_started(self) -> None:
        """Nothing to wait for here: a consumer started while Redis is down waits for it
        behind the fault proxy."""

    def _drained(self) -> bool:
        return group_state(self.settings) == (0, 0)

    def _make_checker(self) -> Checker:
        return Checker(self.settings, llm_labels=LLM_LABELS if self.cfg.llm else ())

    def _run(self, started: float) -> ChaosReport:
        published = self._generate()
        self.report.published = len(published)
        self.report.rejected = sum(1 for p in published if p.reason)
        self._number(published)
        # the last `stall_burst` events come in a burst while MongoDB is stopped, at the end
        burst = published[len(published) - self.cfg.stall_burst :] if self.cfg.stall_burst else []
        for index in range(self.cfg.consumers):
            self._start_consumer(index, f"chaos-{index}-g0")
        self._wait_consumers_started()
        done = threading.Event()
        head = published[: len(published) - len(burst)]
        producer = threading.Thread(target=self._publish, args=(head, done), daemon=True)
        self.t0 = time.monotonic()
        producer.start()
        for at, kind in self._schedule():
            while time.monotonic() - self.t0 < at:
                self._watch_consumers()
                time.sleep(0.05)
            self._watch_consumers()
            self._inject(kind)
        producer.join(self.cfg.publish_s * 4 + 60)
        assert done.is_set(), "producer did not finish"
        if burst:  # into a quiet group: the lanes that do not read it are free
            self._drain()
            self._burst_while_stalled(burst)
        self.report.drain_s = self._drain()
        for proc in self.procs.values():  # all at once, as an orchestrator scales down
            proc.terminate()
        for index, proc in self.procs.items():
            code = proc.wait(30)
            if code != 0:
                self.report.unexpected_exits.append(f"{self.names[index]} stopped with {code}")
        if self.cfg.leaderboard_mode == "derived":
            self._final_refresh()
        self.report.violations += self._make_checker().check(published)
        self.report.wall_s = time.monotonic() - started
        self.report.consumer_warnings = self._count_log_lines()
        return self.report

    def _drain(self) -> float:
        """Seconds until the group is drained (or drain_timeout_s)."""
        started = time.monotonic()
        deadline = started + self.cfg.drain_timeout_s
        stable = 0
        while time.monotonic() < deadline and stable < 3:
            self._watch_consumers()
            stable = stable + 1 if self._drained() else 0
            time.sleep(0.2)
        return time.monotonic() - started

    def _final_refresh(self) -> None:
        """What the consumers' refreshers would do next: the operator's command, which waits
        out the lease of a refresher killed mid-round."""
        env = {"POMOCORE_REDIS_URL": self.redis.url, "POMOCORE_LEADERBOARD_MODE": "derived"}
        done = run_cli("leaderboard", "refresh", "--wait-s", "30", env=env, timeout_s=120)
        if done.returncode != 0:
            self.report.violations.append(f"final refresh failed: {done.stderr.decode()[-300:]}")

    def _count_log_lines(self) -> dict[str, int]:
        """How the consumers saw the faults (evidence that they landed)."""
        counts: dict[str, int] = {}
        for path in self.workdir.glob("consumer-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                for msg in (
                    "redis unavailable",
                    "batch failed",
                    "batch abandoned",
                    "reclaimed idle entries",
                    '"level":"error"',
                ):
                    if msg in line:
                        counts[msg] = counts.get(msg, 0) + 1
        return counts
