"""`python -m benchmarks --shards 1,3,6`: the leaderboard-only consumer (variant c) on a
local 3-node Redis Cluster, with POMOCORE_SHARDS = N (issue #17).

The harness starts the cluster (pomocore.embedded.EmbeddedCluster, masters only), then per
N publishes the workload once, each event to its shard's stream (`shard_of(userId, N)`,
the keys of `Settings.shard_keys`): with N = 1 every key sits under one hash tag, in one
slot, so one node does all the Redis work (the baseline); with N = 3 or 6 the shard tags
spread evenly over the three masters (core/shards.py). Each run reads its N streams
through fresh groups created at id 0 with `--processes` consumer processes, each serving
every shard (at least one lane per shard). Runs go round robin over N (run 1 of every N,
then run 2, ...): the speed of a shared machine drifts over minutes.

Per run: events/s (N / (last acknowledgement − GO)), the consumers' CPU µs/event, and per
node the Redis CPU µs/event from `INFO cpu` (used_cpu_user + used_cpu_sys) taken on each
node at GO and when the last shard drained; the total is their sum (cluster-bus upkeep
of the idle nodes included: it is part of what a cluster costs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.cluster

from benchmarks import protocol
from benchmarks.measure import redis_cpu_s
from benchmarks.options import BenchOptions
from benchmarks.protocol import ChildReport, ChildSpec, RunNames
from benchmarks.report import Progress, write_results
from benchmarks.session import _children, _cpu_model, _flatten, _wait_exited
from benchmarks.shard_report import print_shard_table, shard_summary
from pomocore.core.settings import Settings
from pomocore.core.shards import shard_of
from pomocore.embedded import EmbeddedCluster
from pomocore.workload import Workload

PUBLISH_CHUNK = 2000
CLUSTER_MASTERS = 3
POLL_S = 0.02  # drain poll: N XINFO GROUPS per poll, on the nodes being measured


@dataclass
class ShardRun:
    """The figures of one run with `shards` shards."""

    shards: int
    events: int
    processes: int
    elapsed_s: float
    events_per_s: float
    consumer_cpu_us_per_event: float
    node_cpu_us_per_event: list[float]  # per cluster node, in slot order
    redis_cpu_us_per_event: float  # all nodes together
    busiest_node_share: float  # of the total Redis CPU
    events_per_shard: list[int]
    acked: int
    drained_exactly: bool
    extra: dict[str, Any] = field(default_factory=dict)


class ShardBench:
    """A session of shard runs: the cluster, the published streams, the runs."""

    def __init__(self, options: BenchOptions) -> None:
        self.o = options
        self.session = uuid.uuid4().hex[:8]
        self.prefix = f"pomobench-{self.session}:"
        self.tag = f"pomobench-{self.session}"  # N = 1: every key of the run in its slot
        self.progress = Progress(options.quiet)
        self.stack = contextlib.ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix="pomobench-shards-"))
        self.stack.callback(shutil.rmtree, self.workdir, True)
        self.cluster = EmbeddedCluster(self.workdir / "cluster", CLUSTER_MASTERS)
        self.stack.callback(self.cluster.close)
        self.cluster.start()
        self.nodes = [redis.Redis(host="127.0.0.1", port=p) for p in self.cluster.ports]
        self.client = redis.cluster.RedisCluster.from_url(self.cluster.url)
        self.published: dict[int, list[int]] = {}  # N -> events per shard
        self._run_no = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
            for n in self.nodes:
                n.close()
        self.stack.close()

    def machine(self) -> dict[str, Any]:
        info: dict[str, Any] = self.nodes[0].info("server")
        version = info.get("valkey_version") or info.get("redis_version")
        return {
            "nproc": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "redis_server": f"{info.get('server_name', 'redis')} {version}",
            "cluster": f"{CLUSTER_MASTERS} masters, no replicas, on this machine",
            "cluster_slots": [list(r) for r in self.cluster.slot_ranges],
            "loadavg_at_start": os.getloadavg(),
        }

    # --- keys ---

    def settings(self, shards: int, names: RunNames | None = None) -> Settings:
        """The consumers' settings of a run (`names`), or the publisher's (None): the same
        streams either way, so both sides name every shard's keys alike."""
        run = {}
        if names is not None:
            run = {
                "group": names.group,
                "leaderboard_prefix": names.leaderboard_prefix,
                "dead_letter_stream": names.dead_letter_stream,
                "session_score_stream": names.session_score_stream,
            }
        return Settings.from_dsn(
            self.cluster.url,
            stream=self.stream_name(shards),
            redis_cluster=1,
            key_hash_tag=self.tag,
            shards=shards,
            sinks=("leaderboard",),
            **run,
        )

    def stream_name(self, shards: int) -> str:
        # N in the name: shard i of 3 and shard i of 6 may get the same tag
        return f"{self.prefix}n{shards}:stream"

    def stream_keys(self, shards: int) -> list[str]:
        s = self.settings(shards)
        return [s.shard_keys(i).stream_key for i in range(shards)]

    # --- publishing ---

    def publish(self, shards: int) -> list[int]:
        """The workload in N streams (once per N): events per shard."""
        if shards in self.published:
            return self.published[shards]
        events = self.o.events
        keys = self.stream_keys(shards)
        counts = [0] * shards
        workload = Workload(users=self.o.users, distinct_variants=self.o.distinct_variants, seed=7)
        started = time.perf_counter()
        label = f"publish {events:,} into {shards} shard stream(s)"
        done = 0
        while done < events:
            n = min(PUBLISH_CHUNK, events - done)
            pipe = self.client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
            for fields in workload.events(n):
                shard = shard_of(str(fields["userId"]), shards)
                counts[shard] += 1
                pipe.execute_command("XADD", keys[shard], "*", *_flatten(fields))
            pipe.execute()
            done += n
            self.progress.bar(label, done, events, started)
        self.progress.done(f"{label}: {time.perf_counter() - started:.1f}s, per shard {counts}")
        self.published[shards] = counts
        return counts

    # --- a run ---

    def run(self, shards: int, label: str) -> ShardRun:
        counts = self.publish(shards)
        self._run_no += 1
        names = RunNames.for_run(self.prefix, self.session, self._run_no, uses_mongo=False)
        keys = self.stream_keys(shards)
        for key in keys:
            self.client.xgroup_create(key, names.group, id="0")
        specs = self._specs(shards, names)
        try:
            t_go, cpu0, cpu1, state = self._drive(specs, keys, names, counts, label)
            reports = [ChildReport.read(Path(s.result_file)) for s in specs]
        finally:
            self._cleanup(keys, names)
        result = self._result(shards, counts, reports, t_go, cpu0, cpu1, state)
        result.extra["loadavg_1m_after"] = os.getloadavg()[0]  # how shared the machine was
        per_node = " / ".join(f"{x:.1f}" for x in result.node_cpu_us_per_event)
        self.progress.done(
            f"{label}: {result.events_per_s:,.0f} events/s, consumer"
            f" {result.consumer_cpu_us_per_event:.1f} µs/ev, Redis per node {per_node}"
            f" (total {result.redis_cpu_us_per_event:.1f}) µs/ev"
            + ("" if result.drained_exactly else "  ** NOT DRAINED EXACTLY **")
        )
        return result

    def _specs(self, shards: int, names: RunNames) -> list[ChildSpec]:
        return [
            ChildSpec(
                variant="c",
                redis_url=self.cluster.url,
                mongo_uri="",
                stream=self.stream_name(shards),
                consumer=f"bench-{names.run}-{i}",
                batch_size=self.o.batch_size,
                latency=False,
                result_file=str(self.workdir / f"r{names.run}-{i}.json"),
                profile="",
                profile_file="",
                names=names,
                key_hash_tag=self.tag,
                redis_cluster=True,
                shards=shards,
            )
            for i in range(self.o.processes)
        ]

    def _node_cpu_s(self) -> list[float]:
        return [redis_cpu_s(n) for n in self.nodes]

    def _drive(
        self,
        specs: list[ChildSpec],
        keys: list[str],
        names: RunNames,
        counts: list[int],
        label: str,
    ) -> tuple[float, list[float], list[float], list[tuple[int, int]]]:
        """Start the consumers, GO, wait until every shard drained, stop them: (GO time,
        per-node CPU s at GO and at the drain, per-shard (entries read, pending))."""
        expected = sum(counts)
        with _children(specs) as children:
            for child in children:
                protocol.expect(child, "READY", 120)
            cpu0 = self._node_cpu_s()
            t_go = time.time()
            protocol.go(children, t_go)
            started = time.perf_counter()
            deadline = time.monotonic() + 1800
            while True:
                state = [self._group_state(k, names.group) for k in keys]
                if all(r >= c and p == 0 for (r, p), c in zip(state, counts, strict=True)):
                    cpu1 = self._node_cpu_s()
                    break
                for child in children:
                    if child.poll() is not None:
                        raise RuntimeError(f"shard consumer died ({child.returncode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: not drained in 1800 s: {state}")
                self.progress.bar(label, sum(r - p for r, p in state), expected, started)
                time.sleep(POLL_S)
            protocol.stop(children)
            _wait_exited("c", children)
        return t_go, cpu0, cpu1, state

    def _group_state(self, key: str, group: str) -> tuple[int, int]:
        for g in self.client.xinfo_groups(key):
            if g["name"].decode() == group:
                return int(g.get("entries-read") or 0), int(g.get("pending") or 0)
        return 0, 0

    def _result(
        self,
        shards: int,
        counts: list[int],
        reports: list[ChildReport],
        t_go: float,
        cpu0: list[float],
        cpu1: list[float],
        state: list[tuple[int, int]],
    ) -> ShardRun:
        expected = sum(counts)
        acked = sum(r.acked for r in reports)
        elapsed = max(max(r.last_ack for r in reports) - t_go, 1e-9)
        node_us = [(b - a) / expected * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
        total = sum(node_us)
        return ShardRun(
            shards=shards,
            events=expected,
            processes=len(reports),
            elapsed_s=elapsed,
            events_per_s=expected / elapsed,
            consumer_cpu_us_per_event=sum(r.cpu_s for r in reports) / expected * 1e6,
            node_cpu_us_per_event=node_us,
            redis_cpu_us_per_event=total,
            busiest_node_share=max(node_us) / total if total > 0 else 0.0,
            events_per_shard=counts,
            acked=acked,
            drained_exactly=acked == expected
            and state == [(c, 0) for c in counts],
            extra={k: v for r in reports for k, v in r.extra.items()},
        )

    def _cleanup(self, keys: list[str], names: RunNames) -> None:
        """What the run wrote: its groups and every key under its run prefix."""
        for key in keys:
            with contextlib.suppress(redis.ResponseError):
                self.client.xgroup_destroy(key, names.group)
        run_prefix = names.group.removesuffix("group")
        for node in self.nodes:
            for key in node.scan_iter(match=f"*{run_prefix}*", count=1000):
                node.unlink(key)

    def drop_streams(self) -> None:
        for shards in list(self.published):
            for key in self.stream_keys(shards):
                self.client.unlink(key)
            del self.published[shards]


def run_shard_bench(o: BenchOptions, command: str = "") -> dict[str, Any]:
    """Run the shard scaling session (`o.shards`), print its tables, write its JSON."""
    o.out.mkdir(parents=True, exist_ok=True)
    bench = ShardBench(o)
    try:
        machine = bench.machine()
        bench.progress.say(
            f"pomocore shard scaling: {machine['nproc']} CPUs ({machine['cpu_model']}),"
            f" {machine['redis_server']}, {machine['cluster']}"
        )
        runs: dict[int, list[ShardRun]] = {n: [] for n in o.shards}
        for i in range(o.runs):
            for n in o.shards:
                runs[n].append(bench.run(n, f"c shards={n} run {i + 1}/{o.runs}"))
        bench.drop_streams()
        cores = machine["nproc"] or 1
        out = {
            "session": bench.session,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": command,
            "machine": machine,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()},
            "shards": shard_summary(runs, cores),
            "shard_runs": {str(n): [asdict(r) for r in rs] for n, rs in runs.items()},
            "loadavg_at_end": os.getloadavg(),
        }
    finally:
        bench.close()
    print_shard_table(out)
    print(f"\nresults: {write_results(out, o.out)}")
    return out
