"""The chaos run in sharded mode on a local 3-node Redis Cluster (issue #17).

Three cluster-enabled Valkey nodes with AOF (appendfsync always), POMOCORE_SHARDS=6 (two
shards per node), the MongoDB-wire server, and two `pomocore run` processes (each serving
some shards, or both all of them). A producer publishes each event to its shard's stream
(`shard_of(userId)`), while a seeded schedule SIGKILLs a consumer (restarted under the same
name or a new one) or one cluster node (restarted on the same port from its AOF and
nodes.conf). The nodes run with `cluster-require-full-coverage no`, so a node down stops
its own shards only; the run records whether the other shards kept committing meanwhile.

Then the shards are drained and `ShardChecker` compares what the servers hold with what
was published: the checker's invariants, per shard, plus the merged top-K over shards.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pymongo
import redis
from redis.cluster import ClusterNode, RedisCluster

from pomocore.core.connect import sync_redis
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.core.shards import parse_shard_list, shard_of
from pomocore.embedded import EmbeddedCluster, EmbeddedMongo
from tests.chaos.checker import Checker, Fields, Published, generate
from tests.chaos.harness import ChaosConfig, ChaosReport, ChaosRun
from tests.support.expected import reference_leaderboards
from tests.support.processes import spawn_consumer

SHARDS = 6
HASH_TAG = "chaos"
SHARD_FAULTS = ("kill_consumer", "kill_node")
# what a cluster client raises while a node is down or the slots move back
CLUSTER_RETRIES = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)
TOP_K = 10


def _s(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def shard_of_fields(fields: Fields, shards: int) -> int:
    """The producer's routing: a malformed event without a usable userId still goes to
    one shard (that shard's consumer dead-letters it)."""
    return shard_of(_s(fields.get("userId", "")), shards)


@dataclasses.dataclass(frozen=True, slots=True)
class ShardChaosConfig:
    base: ChaosConfig
    # POMOCORE_CONSUMER_SHARDS of each consumer process ("" = every shard)
    serves: tuple[str, ...] = ("0-2", "3-5")


class ShardChaosRun(ChaosRun):
    def __init__(self, config: ShardChaosConfig, workdir: Path | None = None) -> None:
        super().__init__(dataclasses.replace(config.base, consumers=len(config.serves)), workdir)
        self.serves = config.serves
        self.cluster = EmbeddedCluster(
            self.workdir / "cluster", 3, appendonly=True, require_full_coverage=False
        )
        self.mongo = EmbeddedMongo(self.workdir / "mongo")
        # per node outage: (node, seconds down, session scores the other nodes' shards wrote)
        self.outage_progress: list[tuple[int, float, int]] = []
        self._node_shards: list[list[int]] = []  # the shards each node holds (once started)

    @property
    def settings(self) -> Settings:
        base = Settings.from_dsn(
            self.cluster.url, self.mongo.url, mongo_db="chaos", consumer_name="checker"
        )
        return dataclasses.replace(base, redis_cluster=1, key_hash_tag=HASH_TAG, shards=SHARDS)

    def _consumer_env(self, name: str) -> dict[str, str]:
        index = int(name.split("-")[1])
        return {
            "POMOCORE_REDIS_URL": self.cluster.url,
            "POMOCORE_REDIS_CLUSTER": "1",
            "POMOCORE_KEY_HASH_TAG": HASH_TAG,
            "POMOCORE_SHARDS": str(SHARDS),
            "POMOCORE_CONSUMER_SHARDS": self.serves[index],
            "POMOCORE_MONGO_URI": self.mongo.url,
            "POMOCORE_MONGO_DB": "chaos",
            "POMOCORE_CONSUMER_NAME": name,
            "POMOCORE_BATCH_SIZE": "100",
            "POMOCORE_BLOCK_MS": "200",
            "POMOCORE_LINGER_MS": "5",
            "POMOCORE_RECLAIM_IDLE_MS": "2000",
            "POMOCORE_MAX_DELIVERIES": str(self.cfg.max_deliveries),
            "POMOCORE_MONGO_RETRY_MAX": "2",
            "POMOCORE_MONGO_TIMEOUT_MS": "1000",
            "POMOCORE_SHUTDOWN_TIMEOUT_S": "15",
            "POMOCORE_LOG_LEVEL": "WARNING",
        }

    def _start_consumer(self, index: int, name: str) -> None:
        log = self.workdir / f"consumer-{name}.log"
        self.procs[index] = spawn_consumer(self._consumer_env(name), log=log)
        self.names[index] = name

    def _client(self) -> RedisCluster:
        """Every node as a startup node: the client starts while any one of them is down."""
        nodes = [ClusterNode("127.0.0.1", p) for p in self.cluster.ports]
        return RedisCluster(startup_nodes=nodes, socket_timeout=5, socket_connect_timeout=2)

    # --- producer ---

    def _publish(self, events: list[Published], stop: threading.Event) -> None:
        """One producer thread per shard, at the same pace: a shard whose node is down
        holds up its own producer only, as the users of a shard hold up their own."""
        base_ms = int(time.time() * 1000)
        for n, p in enumerate(events, start=1):
            p.entry_id = f"{base_ms}-{n}"  # increasing in every shard's stream too
        by_shard: defaultdict[int, list[Published]] = defaultdict(list)
        for p in events:
            by_shard[shard_of_fields(p.fields, SHARDS)].append(p)
        keys = self.settings.all_shard_keys
        threads = [
            threading.Thread(target=self._publish_shard, args=(keys[shard].stream_key, mine))
            for shard, mine in by_shard.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()

    def _publish_shard(self, stream: str, events: list[Published]) -> None:
        chunk = max(1, self.cfg.chunk // SHARDS)
        pause = self.cfg.publish_s / max(1, len(events) / chunk)
        for i in range(0, len(events), chunk):
            self._publish_chunk(stream, events[i : i + chunk])
            time.sleep(pause)

    def _publish_chunk(self, stream: str, chunk: list[Published]) -> None:
        """Idempotent: after a failure (the shard's node down), publish only what is missing."""
        while True:
            try:
                client = self._client()
                try:
                    first, last = chunk[0].entry_id, chunk[-1].entry_id
                    present = {_s(e) for e, _ in client.xrange(stream, first, last)}
                    pipe = client.pipeline()
                    for p in chunk:
                        if p.entry_id not in present:
                            pipe.xadd(stream, dict(p.fields), id=p.entry_id)  # type: ignore[arg-type]
                    pipe.execute()
                finally:
                    client.close()
                return
            except CLUSTER_RETRIES:
                time.sleep(0.2)

    # --- faults ---

    def _inject(self, kind: str) -> None:
        if kind == "kill_consumer":
            self._kill_consumer()
        elif kind == "kill_node":
            self._kill_node()
        else:
            raise ValueError(f"unknown fault {kind!r} in a sharded chaos run")

    def _kill_consumer(self) -> None:
        """SIGKILL a consumer and restart it, and let it read again before the next fault:
        a node killed while `pomocore run` starts makes it exit 3 when that node is the
        one POMOCORE_REDIS_URL names (docs/guarantees.md, "Shards")."""
        super()._kill_consumer()
        self._wait_consumers_started()

    def _kill_node(self) -> None:
        index = self.rng.randrange(len(self.cluster.nodes))
        # longer than the 2 s node timeout half the time: the others then mark it failed
        down = self.rng.uniform(0.5, 4.0)
        node = self.cluster.nodes[index]
        shards = self._node_shards[index]
        others = [s for s in range(SHARDS) if s not in shards]
        self._note(f"kill_node {index} (port {node.port}, shards {shards}) -9, down {down:.1f}s")
        node.kill()
        before = self._acked(others)
        time.sleep(down)
        after = self._acked(others)
        if before is not None and after is not None:
            self.outage_progress.append((index, down, after - before))
        node.start()  # same port, same nodes.conf; start() waits until the AOF is loaded
        self._wait_cluster_ok(30.0)

    def _shards_of_node(self, index: int) -> list[int]:
        lo, hi = self.cluster.slot_ranges[index]
        client = redis.Redis(host="127.0.0.1", port=self.cluster.ports[index])
        try:
            slots = [
                int(client.execute_command("CLUSTER", "KEYSLOT", k.stream_key))  # type: ignore[no-untyped-call]
                for k in self.settings.all_shard_keys
            ]
        finally:
            client.close()
        return [s for s, slot in enumerate(slots) if lo <= slot <= hi]

    def _acked(self, shards: list[int]) -> int | None:
        """Session scores the consumers of `shards` committed so far (one per ended
        session, 5% of the events; None: unreadable). Written by the commit script with
        the batch's leaderboard increments, they count committed batches."""
        keys = self.settings.all_shard_keys
        try:
            client = self._client()
            try:
                return sum(int(client.xlen(keys[s].session_score_key)) for s in shards)
            finally:
                client.close()
        except CLUSTER_RETRIES:
            return None

    def _wait_cluster_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ok = 0
            for port in self.cluster.ports:
                client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
                try:
                    info = _s(client.execute_command("CLUSTER", "INFO"))  # type: ignore[no-untyped-call]
                    ok += "cluster_state:ok" in info
                except CLUSTER_RETRIES:
                    pass
                finally:
                    client.close()
            if ok == len(self.cluster.ports):
                return
            time.sleep(0.1)
        self.report.violations.append(f"cluster not ok {timeout_s}s after a node restart")

    # --- the run ---

    def run(self) -> ChaosReport:
        started = time.monotonic()
        self.cluster.start()
        self.mongo.start()
        self._node_shards = [self._shards_of_node(i) for i in range(3)]
        try:
            return self._run(started)
        finally:
            for proc in self.procs.values():
                proc.kill()
            self.cluster.close()
            self.mongo.close()
            self._keep_or_remove_workdir()

    def _wait_consumers_started(self) -> None:
        """Faults start once every consumer reads its shards: `pomocore run` started while
        the node its POMOCORE_REDIS_URL names is down exits 3 (it cannot learn the
        cluster's layout), a start-up failure left to the orchestrator, not this run."""
        want = {(self.names[i], s) for i, serves in enumerate(self.serves) for s in
                parse_shard_list(serves, SHARDS, "serves")}  # fmt: skip
        deadline = time.monotonic() + 60
        keys = self.settings.all_shard_keys
        while time.monotonic() < deadline:
            client = self._client()
            try:
                seen = {
                    (_s(c["name"]), s) for s, k in enumerate(keys)
                    for c in _consumers(client, k.stream_key, self.settings.group)
                }  # fmt: skip
            finally:
                client.close()
            # (a lane's consumer name extends its process's)
            if all(any(c.startswith(n) and t == s for c, t in seen) for n, s in want):
                return
            time.sleep(0.2)
        raise AssertionError(f"consumers not reading within 60 s: {sorted(want)}")

    def _drained(self) -> bool:
        try:
            client = sync_redis(self.settings)
        except CLUSTER_RETRIES:
            return False
        try:
            group, shards = self.settings.group, self.settings.all_shard_keys
            return all(_group_state(client, k, group) == (0, 0) for k in shards)
        except CLUSTER_RETRIES:
            return False
        finally:
            client.close()

    def _make_checker(self) -> Checker:
        return ShardChecker(self.settings)

    def _generate(self) -> list[Published]:
        cfg = self.cfg
        return generate(cfg.seed, cfg.events, time.time(), distinct_variants=cfg.distinct_variants)


def _consumers(client: Any, stream: str, group: str) -> list[dict[str, Any]]:
    try:
        return list(client.xinfo_consumers(stream, group))
    except redis.ResponseError:  # no stream or group yet
        return []


def _group_state(client: Any, keys_stream: KeySpace | str, group: str) -> tuple[int, int]:
    stream = keys_stream.stream_key if isinstance(keys_stream, KeySpace) else keys_stream
    for g in client.xinfo_groups(stream):
        if _s(g["name"]) == group:
            return int(g.get("lag") or 0), int(g["pending"])
    return -1, -1


class ShardChecker(Checker):
    """The chaos checker's invariants over the shards: each shard's leaderboards hold
    exactly its users' events, its dead letters its rejected events, its session scores
    its session ends, its group nothing pending; and the top-K merged over the shards
    equals the top-K of one leaderboard fed every event."""

    def check(self, published: list[Published]) -> list[str]:
        s = self.settings
        violations: list[str] = []
        client: Any = sync_redis(s, timeout_s=10.0)
        mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(s.mongo_uri)
        try:
            accepted = self._accepted(mongo[s.mongo_db], published)
            violations += self._usage_logs(mongo[s.mongo_db], accepted)
            violations += self._references(mongo[s.mongo_db])
            violations += self._shard_leaderboards(client, accepted)
            violations += self._merged_top(client, accepted)
            violations += self._rebuild_check(accepted)
            violations += self._shard_dead_letters(client, published)
            violations += self._shard_sessions(client, accepted)
            violations += self._shard_groups(client)
        finally:
            client.close()
            mongo.close()
        return violations

    def _shard(self, fields: Fields) -> KeySpace:
        return self.settings.all_shard_keys[shard_of_fields(fields, self.settings.shards)]

    def _shard_leaderboards(self, client: Any, accepted: list[tuple[Fields, str]]) -> list[str]:
        s = self.settings
        prefix = s.leaderboard_prefix
        expected: dict[str, dict[str, float]] = {}
        for shard, keys in enumerate(s.all_shard_keys):
            mine = [(f, c) for f, c in accepted if shard_of_fields(f, s.shards) == shard]
            for plain, board in reference_leaderboards(mine, s.timezone, prefix).items():
                _, category, period = plain.split(":", 2)
                expected[keys.leaderboard(category, period)] = board
        actual: dict[str, dict[str, float]] = {}
        for key in client.scan_iter(match=f"*{prefix}:*", count=1000):
            rows = client.zrange(key, 0, -1, withscores=True)
            actual[_s(key)] = {_s(m): float(v) for m, v in rows}
        out = [
            f"leaderboard key {'extra' if k in actual else 'missing'}: {k}"
            for k in sorted(set(actual) ^ set(expected))
        ]
        for k in sorted(set(actual) & set(expected)):
            have, want = actual[k], expected[k]
            for user in sorted(set(have) | set(want)):
                a, e = have.get(user), want.get(user)
                if a is None or e is None or abs(a - e) > 1e-6 * max(1.0, abs(e)):
                    out.append(f"leaderboard score wrong: {k} {user}: {a} != expected {e}")
        return out

    def _merged_top(self, client: Any, accepted: list[tuple[Fields, str]]) -> list[str]:
        """What a reader over the shards answers for the top TOP_K: each shard's top-K,
        merged (a user lives in one shard, so no score is split), against the top-K of the
        single-key expectation. Ties ordered as Redis orders them (member descending)."""
        s = self.settings
        single = reference_leaderboards(accepted, s.timezone, s.leaderboard_prefix)
        out: list[str] = []
        for plain, board in sorted(single.items()):
            _, category, period = plain.split(":", 2)
            merged: list[tuple[str, float]] = []
            for keys in s.all_shard_keys:
                key = keys.leaderboard(category, period)
                rows = client.zrevrange(key, 0, TOP_K - 1, withscores=True)
                merged += [(_s(m), float(v)) for m, v in rows]
            have = sorted(merged, key=lambda r: (r[1], r[0]), reverse=True)[:TOP_K]
            want = sorted(board.items(), key=lambda r: (r[1], r[0]), reverse=True)[:TOP_K]
            if len(have) != len(want):
                out.append(f"merged top-{TOP_K} of {plain}: {len(have)} rows != {len(want)}")
                continue
            for (hu, hv), (wu, wv) in zip(have, want, strict=True):
                close = abs(hv - wv) <= 1e-6 * max(1.0, abs(wv))
                if not close or (hu != wu and abs(board.get(hu, -1.0) - wv) > 1e-6 * max(1.0, wv)):
                    out.append(f"merged top-{TOP_K} of {plain}: ({hu}, {hv}) != ({wu}, {wv})")
        return out

    def _shard_dead_letters(self, client: Any, published: list[Published]) -> list[str]:
        found: dict[tuple[str, str], list[str]] = {}
        for keys in self.settings.all_shard_keys:
            for _, f in client.xrange(keys.dead_letter_key):
                entry = (keys.stream_key, _s(f.get(b"dlq.entry_id", b"")))
                found.setdefault(entry, []).append(_s(f.get(b"dlq.reason", b"")))
        out: list[str] = []
        for p in published:
            if p.reason is None:
                continue
            reasons = found.pop((self._shard(p.fields).stream_key, p.entry_id), [])
            if reasons != [p.reason]:
                out.append(f"dead letter of {p.entry_id}: {reasons} != [{p.reason}]")
        out += [f"unexpected dead letter of {e}: {r}" for e, r in found.items()]
        return out

    def _shard_sessions(self, client: Any, accepted: list[tuple[Fields, str]]) -> list[str]:
        want = Counter(
            (self._shard(f).session_score_key, _s(f["userId"]), _s(f["sessionDate"]),
             int(_s(f["session"])))
            for f, _ in accepted
            if _s(f.get("isEnd", "")).lower() in ("true", "1")
        )
        have: Counter[tuple[str, str, str, int]] = Counter()
        for keys in self.settings.all_shard_keys:
            for _, f in client.xrange(keys.session_score_key):
                row = (_s(f[b"userId"]), _s(f[b"sessionDate"]), int(f[b"session"]))
                have[(keys.session_score_key, *row)] += 1
        out = [f"session score missing: {k} x{n}" for k, n in (want - have).items()]
        out += [f"session score extra: {k} x{n}" for k, n in (have - want).items()]
        return out

    def _shard_groups(self, client: Any) -> list[str]:
        out = []
        for keys in self.settings.all_shard_keys:
            lag, pending = _group_state(client, keys, self.settings.group)
            if (lag, pending) == (-1, -1):
                out.append(f"consumer group missing on {keys.stream_key}")
            elif lag or pending:
                out.append(f"group of {keys.stream_key}: lag {lag}, pending {pending}")
        return out

