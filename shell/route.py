"""`pomocore route`: moves what producers publish to the contract stream to the shards.

With POMOCORE_SHARDS > 1 each shard reads its own input stream (core/shards.py). The
producer kit writes to the right shard itself (shell/producer.py); producers that keep
publishing to the contract stream (`pattern_match_stream`) are served by this forwarder.
It reads the contract stream with its own consumer group (`pomocore-route`, core/keys.py)
and moves each entry, its fields unchanged, to the stream of its user's shard, exactly
once across crashes, then acknowledges it. An entry without a `userId` (or whose value
is not UTF-8) goes to shard 0, whose consumer dead-letters it as it would on the contract
stream: dead letters stay where the consumers put them, with the consumer's reason.

**One forwarder at a time.** Several `pomocore route` processes may run; one holds the
lease (`{tag}pomocore:route:<stream>:lease`: SET NX PX with a random token, renewed by
every read) and works, the others wait as standbys and take over when it lapses (a
SIGKILLed holder's after at most `--lease-s`; one stopped by SIGTERM hands it over at
once). Each holder gets an epoch (`{tag}pomocore:route:<stream>:epoch`, INCR when the
lease is taken), larger than every earlier holder's.

**The commit order** (each numbered step one atomic script or command):

1. Take the lease and the next epoch E (TAKE_LEASE, on the contract stream's slot).
2. Fence every shard (FORWARD with no entries, on each shard's slot): the shard's ledger
   (`{shard tag}pomocore:route:<stream>:last`, a hash: `id` the last source id moved
   there, `epoch` the highest epoch seen) takes E. From then on that shard refuses every
   call of an older holder: a holder that stalled (SIGSTOP, a long pause) past its lease
   and wakes up cannot write to any shard. A ledger already past E (only if the epoch
   counter was lost with its data) raises the counter past it, and step 2 runs again.
3. Claim every pending entry of the group to this holder (CLAIM_ALL, lease-checked): the
   entries read by earlier holders and never acknowledged, whether they were moved or not.
   Consumers left with no entries are removed from the group.
4. Read (READ, lease-checked, renewing the lease): first this holder's own pending
   entries (XREADGROUP id 0), then new ones (`>`), COUNT batch size. A holder whose lease
   lapsed reads nothing: the group's delivered position moves only under the lease.
5. Per shard, one FORWARD call for the batch's entries of that shard, in source-id order
   (the calls of one batch pipelined): it refuses the call if the ledger's epoch is past
   E; otherwise, for each entry, an id at or below the ledger's `id` is a repeat (skipped),
   a higher one is XADDed to the shard stream (a new, automatic id: producers may write to
   the shard streams directly too) and becomes the ledger's `id`, all in one script.
6. XACK the batch on the contract stream, then back to 4. After any error: back to 4 with
   the own pending entries (id 0): what was moved already comes back as repeats.

**Why nothing is lost or duplicated.** One holder: entries are delivered to the group in
id order, only under the lease (4), and it moves its pending entries before new ones (3,
4), so it moves each shard's entries in increasing id order. Across holders: a new one
claims every pending entry (3) before it reads, and moves those first; the old holder
can read nothing more (4), so whatever it may still write late concerns only the claimed
entries, and each call is atomic: its work or the new holder's comes second and finds
repeats. So every shard receives the contract stream's entries in increasing id order,
and its ledger's `id` is the last one moved: an entry at or below it was moved (a repeat:
skipped), one above it was not (moved now, in the same atomic step that records it). An
entry is acknowledged (6) only after its shard's call succeeded, so it stays pending until
it has been moved once; a crash anywhere (SIGKILL between any two steps) leaves it
pending, and the next holder moves it, or finds it moved. The fence (2) is a second lock
on the same door: a holder past its lease cannot write at all, even a harmless repeat.

The evidence: tests/chaos (`test_route_chaos*`), forwarders SIGKILLed, SIGSTOPped past
their lease and cut off by connection resets while producers publish; the run fails when
repeats are not skipped (duplicates) or a batch is acknowledged before it is moved
(losses). Without the lease check of step 4, a holder woken after a takeover reads new
entries it can then not move: they wait in its pending list while the new holder moves
later ones, and the next takeover would skip them as repeats (tests/ops/test_route.py
checks that such a holder reads nothing).

What the ledger cannot tell apart: an entry whose shard stream was deleted after it was
moved, and a contract stream recreated with lower ids (a Redis restored from an older
backup): entries at or below a ledger's `id` are then skipped as repeats. Delete the
`pomocore:route:*` keys with the streams.

**Retention.** With POMOCORE_STREAM_MAXLEN > 0 the holder trims the contract stream as the
consumers trim theirs (consumers/trimming.py): never an entry a group on it still needs,
so a group left behind there (the consumers' group of a deployment with one shard) holds
it back: destroy that group once it has no lag and nothing pending.

Commands it runs (the `worker` ACL user may, shell/acl.py): EVALSHA, SCRIPT LOAD, XGROUP
CREATE, XREAD (blocking, to wait for new entries without reading them), XACK; inside the
scripts GET, SET, PEXPIRE, INCR, DEL, XREADGROUP, XAUTOCLAIM, XINFO, XGROUP DELCONSUMER,
TYPE, HGET, HSET and XADD; trimming's commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from pomocore.cli_format import add_json, bounded_float, bounded_int, logging_parent, write_json
from pomocore.consumers.app import install_signal_handlers
from pomocore.consumers.trimming import LUA_ID_LESS, StreamTrimmer
from pomocore.core.connect import async_redis, command_timeout_s, send_packed
from pomocore.core.errors import ConfigError
from pomocore.core.events import MAX_ENTRY_FIELDS
from pomocore.core.keys import ROUTE_GROUP
from pomocore.core.logs import setup_logging
from pomocore.core.redis_errors import Fault, redis_fault
from pomocore.core.retry import backoff_s
from pomocore.core.settings import Settings
from pomocore.core.shards import key_slot, shard_of_field, shard_tag

log = logging.getLogger("pomocore.route")

# Stream ids compared as decimal strings (exact for any 64-bit part), as in trimming.
_IDS = LUA_ID_LESS

# 1. KEYS: lease, epoch; ARGV: token, lease ms. The new epoch, or false (held by another).
TAKE_LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
"""
# KEYS: lease; ARGV: token. Handing the lease over on a graceful stop.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# 2. (a ledger past our epoch) KEYS: lease, epoch; ARGV: token, at least. The counter
# raised to at least ARGV[2], or false when the lease is not ours.
RAISE_EPOCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if epoch < tonumber(ARGV[2]) then
  epoch = tonumber(ARGV[2])
  redis.call('SET', KEYS[2], epoch)
end
return epoch
"""
# 3. KEYS: stream, lease; ARGV: token, group, consumer. {claimed, deleted while pending,
# consumers removed}, or false when the lease is not ours.
CLAIM_ALL = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
local claimed, gone, start = 0, 0, '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], 0, start, 'COUNT', 1000,
                       'JUSTID')
  start = r[1]
  claimed = claimed + #r[2]
  if r[3] then gone = gone + #r[3] end
until start == '0-0'
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[2])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[3] and tonumber(info['pending']) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[2], info['name'])
    removed = removed + 1
  end
end
return {claimed, gone, removed}
"""
# 4. KEYS: stream, lease; ARGV: token, lease ms, group, consumer, count, start id.
# {entries, ''}; with none, {{}, the group's last delivered id}; false: the lease is lost.
READ = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local got = redis.call('XREADGROUP', 'GROUP', ARGV[3], ARGV[4], 'COUNT', ARGV[5],
                       'STREAMS', KEYS[1], ARGV[6])
if got and #got[1][2] > 0 then return {got[1][2], ''} end
local last = ''
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[3] then last = info['last-delivered-id'] end
end
return {{}, last}
"""
# 2. and 5. KEYS: shard stream, ledger; ARGV: epoch, then per entry, in increasing id
# order: source id, number of field values n, the n values. {moved, repeats};
# {-1, ledger epoch}: fenced off; {-2, type}: the shard stream's key holds another type
# (nothing written).
FORWARD = (
    _IDS
    + """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'stream' and kind ~= 'none' then return {-2, kind} end
local epoch = tonumber(ARGV[1])
local held = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if held > epoch then return {-1, held} end
if held < epoch then redis.call('HSET', KEYS[2], 'epoch', ARGV[1]) end
local last = redis.call('HGET', KEYS[2], 'id') or '0-0'
local moved, repeats, i, count, past = 0, 0, 2, #ARGV, false
while i <= count do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  -- the entries come in id order: once one is past the ledger, so are the rest
  past = past or less(last, id)
  if past then
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 2, i + 1 + n))
    last = id
    moved = moved + 1
  else
    repeats = repeats + 1
  end
  i = i + 2 + n
end
if moved > 0 then redis.call('HSET', KEYS[2], 'id', last) end
return {moved, repeats}
"""
)
SCRIPTS = (TAKE_LEASE, RELEASE_LEASE, RAISE_EPOCH, CLAIM_ALL, READ, FORWARD)

FENCED = -1
WRONG_TYPE = -2
DEFAULT_LEASE_S = 5.0
# A standby asks for the lease 4 times per lease, at least once a second (one SET NX):
# a holder that stops hands it over, and a standby takes it within a second.
STANDBY_POLL_SHARE = 0.25
STANDBY_POLL_MAX_S = 1.0
# After transient Redis errors in a row: capped exponential backoff with jitter
# (core/retry.py), so that forwarders cut off from the same Redis do not come back in
# lockstep.
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
TRIM_PERIOD_S = 1.0
REPORT_PERIOD_S = 30.0


class LeaseLost(Exception):
    """This forwarder no longer holds the lease (it lapsed, or a newer holder fenced a
    shard): it stops working and waits as a standby. Internal to this module."""


@dataclass(slots=True)
class RouteStats:
    """What this process did (logged, and read by tests)."""

    moved: int = 0  # entries XADDed to a shard stream
    repeats: int = 0  # entries found moved already (a crash, a lost reply, a takeover)
    gone: int = 0  # entries deleted from the contract stream while pending
    batches: int = 0
    leases: int = 0  # times this process took the lease
    lost: int = 0  # times it lost the lease while working

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Lease:
    token: str
    epoch: int


Entry = tuple[str, "list[bytes] | None"]  # source id, [name, value, ...] (None: deleted)


def shard_args(entries: Sequence[Entry], shards: int) -> tuple[dict[int, list[Any]], int]:
    """The FORWARD arguments after the epoch, per shard, in the entries' order; and how
    many entries were deleted (nothing to move). Pure.

    An entry's shard is its `userId`'s (the last one of a repeated name, as the consumer
    reads it). An entry with more than MAX_ENTRY_FIELDS fields, which the consumer
    dead-letters as too_large keeping the first MAX_ENTRY_FIELDS of them, is moved with
    one field more than that (Lua passes at most about 8,000 values to XADD)."""
    out: dict[int, list[Any]] = {}
    gone = 0
    for entry_id, flat in entries:
        if flat is None:
            gone += 1
            continue
        flat = flat[: 2 * (MAX_ENTRY_FIELDS + 1)]
        user = None
        for i in range(0, len(flat) - 1, 2):
            if flat[i] == b"userId":
                user = flat[i + 1]
        out.setdefault(shard_of_field(user, shards), []).extend((entry_id, len(flat), *flat))
    return out, gone


def check_shards(settings: Settings) -> None:
    """Raises ConfigError when there is nothing to route to (one shard)."""
    if settings.shards == 1:
        raise ConfigError(
            "POMOCORE_SHARDS",
            "pomocore route moves entries to shard streams: set it above 1 "
            "(with one shard the consumers read the contract stream itself)",
        )


class Forwarder:
    """The lease loop and the work of one holder (the module's doc: its commit order)."""

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        consumer: str | None = None,
    ) -> None:
        check_shards(settings)
        self.settings = settings
        self.client = client
        self.keys = settings.keys
        self.lease_ms = int(lease_s * 1000)
        self.consumer = consumer or settings.consumer_name
        self.stats = RouteStats()
        self.shard_keys = settings.all_shard_keys
        self._sha: dict[str, str] = {}
        self._trimmer = StreamTrimmer(settings, client) if settings.stream_maxlen else None
        self._trimmed_at = 0.0
        # a wait for new entries ends well within the lease: each read renews it
        self._wait_ms = max(1, min(settings.block_ms, self.lease_ms // 3))
        self._standby_poll_s = min(STANDBY_POLL_MAX_S, lease_s * STANDBY_POLL_SHARE)

    # --- the lease loop ---

    async def run(self, stop: asyncio.Event, start_id: str = "0") -> None:
        """Standby, holder, standby... until `stop`; the lease is handed over on the way out."""
        failures = 0  # transient Redis errors in a row
        reported = time.monotonic()
        created = False
        while not stop.is_set():
            lease = None
            try:
                if not created:  # (Redis may be away when this process starts)
                    await self._create_group(start_id)
                    created = True
                lease = await self._take_lease()
                if lease is None:
                    await _wait(stop, self._standby_poll_s)
                    continue
                await self._hold(lease, stop)
                failures = 0
            except LeaseLost as exc:
                self.stats.lost += 1
                log.warning("route: lease lost, standing by", extra={"why": str(exc)})
            except REDIS_ERRORS as exc:
                if redis_fault(exc) is Fault.FATAL:
                    raise
                log.warning("route: Redis failed, retrying", extra={"error": str(exc)[:200]})
                failures += 1
                await _wait(stop, retry_delay_s(failures))
            finally:
                if lease is not None and stop.is_set():
                    await self._release(lease)
            if time.monotonic() - reported > REPORT_PERIOD_S:
                reported = time.monotonic()
                log.info("route: progress", extra=self.stats.as_dict())

    async def _create_group(self, start_id: str) -> None:
        try:
            await self.client.xgroup_create(
                self.keys.stream_key, ROUTE_GROUP, id=start_id, mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _take_lease(self) -> Lease | None:
        token = secrets.token_hex(16)
        epoch = await self._script(
            TAKE_LEASE, [self.keys.route_lease_key, self.keys.route_epoch_key],
            [token, self.lease_ms],
        )  # fmt: skip
        return None if epoch is None else Lease(token, int(epoch))

    async def _release(self, lease: Lease) -> None:
        with contextlib.suppress(*REDIS_ERRORS):  # else it lapses by itself
            await self._script(RELEASE_LEASE, [self.keys.route_lease_key], [lease.token])

    # --- the holder ---

    async def _hold(self, lease: Lease, stop: asyncio.Event) -> None:
        """Steps 2-6 until `stop` (the module's doc); raises LeaseLost. A transient Redis
        error sends it back (after a pause) to step 2 if it had not passed step 3, else
        to its own pending entries: what was moved already comes back as repeats."""
        self.stats.leases += 1
        ready, start, failures = False, "0", 0
        while not stop.is_set():
            try:
                if not ready:
                    lease = await self._take_over(lease)
                    ready, start = True, "0"
                start = await self._step(lease, start)
                failures = 0
            except REDIS_ERRORS as exc:
                if redis_fault(exc) is Fault.FATAL:
                    raise
                log.warning("route: Redis failed, retrying", extra={"error": str(exc)[:200]})
                failures += 1
                await _wait(stop, retry_delay_s(failures))
                start = "0"

    async def _take_over(self, lease: Lease) -> Lease:
        """Steps 2 and 3: fence the shards, then claim every pending entry."""
        lease = await self._fence(lease)
        claimed = await self._script(
            CLAIM_ALL, [self.keys.stream_key, self.keys.route_lease_key],
            [lease.token, ROUTE_GROUP, self.consumer],
        )  # fmt: skip
        if claimed is None:
            raise LeaseLost("lapsed before the claim")
        log.info(
            "route: holding the lease",
            extra={"epoch": lease.epoch, "consumer": self.consumer, "claimed": int(claimed[0]),
                   "deleted_while_pending": int(claimed[1])},
        )  # fmt: skip
        return lease

    async def _step(self, lease: Lease, start: str) -> str:
        """Steps 4-6 once: a batch read from `start` ("0": own pending entries, ">": new
        ones) moved and acknowledged, or a wait for new entries; the next start."""
        read = await self._script(
            READ, [self.keys.stream_key, self.keys.route_lease_key],
            [lease.token, self.lease_ms, ROUTE_GROUP, self.consumer,
             self.settings.batch_size, start],
        )  # fmt: skip
        if read is None:
            raise LeaseLost("lapsed")
        entries = [(_text(e[0]), e[1]) for e in read[0]]
        if not entries:
            if start == ">":
                await self._idle(_text(read[1]))
            return ">"
        await self._forward(lease, entries)
        await self.client.xack(self.keys.stream_key, ROUTE_GROUP, *[e[0] for e in entries])
        self.stats.batches += 1
        await self._trim()
        return start

    async def _fence(self, lease: Lease) -> Lease:
        """Step 2: every shard's ledger takes this epoch (raised past a ledger ahead of it)."""
        every: dict[int, list[Any]] = {i: [] for i in range(len(self.shard_keys))}
        while True:
            replies = await self._forward_calls(lease.epoch, every)
            ahead = [int(r[1]) for r in replies.values() if int(r[0]) == FENCED]
            if not ahead:
                return lease
            log.error(
                "route: a shard's ledger is past the epoch counter (was the counter lost?); "
                "raising it", extra={"epoch": lease.epoch, "ledger_epoch": max(ahead)},
            )  # fmt: skip
            epoch = await self._script(
                RAISE_EPOCH, [self.keys.route_lease_key, self.keys.route_epoch_key],
                [lease.token, max(ahead) + 1],
            )  # fmt: skip
            if epoch is None:
                raise LeaseLost("lapsed while fencing")
            lease = Lease(lease.token, int(epoch))

    async def _forward(self, lease: Lease, entries: Sequence[Entry]) -> None:
        """Step 5: one FORWARD call per shard of the batch."""
        per_shard, gone = shard_args(entries, len(self.shard_keys))
        replies = await self._forward_calls(lease.epoch, per_shard)
        for shard, (code, value) in replies.items():
            if int(code) == FENCED:
                raise LeaseLost(f"shard {shard} is held by epoch {int(value)}")
            self.stats.moved += int(code)
            self.stats.repeats += int(value)
        self.stats.gone += gone

    async def _forward_calls(self, epoch: int, per_shard: dict[int, list[Any]]) -> dict[int, Any]:
        """FORWARD on each shard of `per_shard`, pipelined (a Cluster client sends each node
        its calls); the replies by shard. A missing script is loaded and the calls sent
        again (each call is all or nothing, and a repeat moves nothing)."""
        sha = await self._loaded(FORWARD)
        for attempt in (1, 2):
            commands = []
            for shard, args in per_shard.items():
                k = self.shard_keys[shard]
                commands.append(("EVALSHA", sha, 2, k.stream_key, k.route_last_key, epoch, *args))
            replies = await self._pipeline(commands)
            missing = any(isinstance(r, NoScriptError) for r in replies)
            if missing and attempt == 1:
                await self._load(FORWARD)
                continue
            for shard, reply in zip(per_shard, replies, strict=True):
                if isinstance(reply, Exception):
                    raise reply
                if int(reply[0]) == WRONG_TYPE:
                    key = self.shard_keys[shard].stream_key
                    raise ResponseError(f"WRONGTYPE shard stream {key} holds a {_text(reply[1])}")
            return dict(zip(per_shard, replies, strict=True))
        raise AssertionError("unreachable")  # the second attempt returns or raises

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands' replies (an error reply as its exception), in one round trip per
        node. On a standalone client the request is packed by hiredis, in C: redis-py's
        asyncio client packs in pure Python, 2/3 of the forwarder's CPU (cProfile of
        `python -m benchmarks.route`: 6.5 of 10 s in pack_command)."""
        if type(self.client) is not aioredis.Redis:  # a Cluster client: split by node
            pipe: Any = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
        packed = b"".join(pack_command(command) for command in commands)
        return await send_packed(self.client, packed, len(commands))

    async def _idle(self, last_id: str) -> None:
        """Nothing new: wait (without reading it) for an entry after the group's position,
        at most a third of the lease, which the next read renews."""
        await self._trim()
        await self.client.xread({self.keys.stream_key: last_id or "$"}, count=1,
                                block=self._wait_ms)  # fmt: skip

    async def _trim(self) -> None:
        if self._trimmer is None or time.monotonic() - self._trimmed_at < TRIM_PERIOD_S:
            return
        self._trimmed_at = time.monotonic()
        await self._trimmer.trim_input()

    # --- scripts ---

    async def _loaded(self, script: str) -> str:
        return self._sha.get(script) or await self._load(script)

    async def _load(self, script: str) -> str:
        sha: Any = await self.client.script_load(script)  # (a Cluster client: every primary)
        self._sha[script] = _text(sha)
        return self._sha[script]

    async def _script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first when the server does not have it."""
        sha = await self._loaded(script)
        try:
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            sha = await self._load(script)
            return await self.client.evalsha(sha, len(keys), *keys, *args)


# What a Redis call may raise: redis-py's errors, a socket's that slip through (TLS), and
# the Cluster client's own (not a RedisError) when it reaches no node.
REDIS_ERRORS = (RedisError, OSError, RedisClusterException)


def retry_delay_s(failures: int) -> float:
    """The pause after the `failures`-th transient Redis error in a row (1-based)."""
    return backoff_s(failures, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- the commands -------------------------------------------------------------------------


async def serve(settings: Settings, lease_s: float, start_id: str) -> RouteStats:
    """`pomocore route` until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    client = async_redis(
        settings, socket_timeout=command_timeout_s(settings), socket_connect_timeout=5.0
    )
    forwarder = Forwarder(settings, client, lease_s=lease_s)
    log.info(
        "route: started",
        extra={"stream": settings.keys.stream_key, "shards": settings.shards,
               "consumer": forwarder.consumer, "lease_s": lease_s},
    )  # fmt: skip
    try:
        await forwarder.run(stop, start_id)
    finally:
        await client.aclose()
        log.info("route: stopped", extra=forwarder.stats.as_dict())
    return forwarder.stats


def cmd_route(args: argparse.Namespace) -> int:
    settings = Settings.from_env(
        batch_size=args.batch_size, log_format=args.log_format, log_level=args.log_level
    )
    setup_logging(settings.log_format, settings.log_level)
    check_shards(settings)  # (before connecting)
    # asyncio's own loop, not uvloop: redis-py's Cluster client, writing on a connection
    # the peer reset, met uvloop's RuntimeError ("the handler is closed"), which no
    # Redis error handling catches (the chaos run's proxy resets ended forwarders so);
    # asyncio's transport reports the reset as the ConnectionError it is. A forwarder
    # moves entries, it does not classify them: the loop is not its cost.
    asyncio.run(serve(settings, args.lease_s, args.start_id))
    return 0


def shard_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per shard: its tag, input stream and Redis Cluster slot."""
    rows = []
    for i in range(settings.shards):
        stream = settings.shard_keys(i).stream_key
        tag = shard_tag(i, settings.shards) if settings.shards > 1 else settings.key_hash_tag
        rows.append({"shard": i, "tag": tag, "stream": stream, "slot": key_slot(tag or stream)})
    return rows


def shards_command(settings: Settings, as_json: bool, out: TextIO = sys.stdout) -> int:
    contract = settings.keys.stream_key
    rows = shard_rows(settings)
    if as_json:
        write_json({"shards": settings.shards, "contract_stream": contract, "rows": rows}, out)
        return 0
    out.write(
        f"{settings.shards} shard(s); producers that pick no shard publish to {contract} "
        "(pomocore route)\n"
    )
    out.write(f"{'shard':<7}{'slot':<7}{'tag':<20}stream\n")
    for r in rows:
        out.write(f"{r['shard']:<7}{r['slot']:<7}{r['tag'] or '-':<20}{r['stream']}\n")
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    return shards_command(Settings.from_env(), args.json)


def register(sub: Any) -> None:
    """`pomocore route` and `pomocore shards`."""
    route = sub.add_parser(
        "route",
        parents=[logging_parent()],
        help="move entries of the contract stream to the shards' streams (POMOCORE_SHARDS > 1)",
        description="Read the contract stream with the group pomocore-route and move each "
        "entry, fields unchanged, to its user's shard stream, exactly once across crashes. "
        "Run one or more: one holds a lease and works, the others stand by "
        "(docs/operations.md, 'The forwarder').",
    )
    route.add_argument(
        "--lease-s",
        type=bounded_float(0.5, 300),
        default=DEFAULT_LEASE_S,
        help="how long a holder that stopped answering keeps the standbys waiting",
    )
    route.add_argument(
        "--batch-size",
        type=bounded_int(1, 5_000),
        help="entries per read (default: $POMOCORE_BATCH_SIZE, else 1000)",
    )
    route.add_argument(
        "--start-id",
        default="0",
        help="where the group starts when it is created: 0 (every entry), $ (new ones) or "
        "an entry id",
    )
    route.set_defaults(func=cmd_route)
    shards = sub.add_parser(
        "shards",
        help="each shard's hash tag, input stream and Cluster slot (POMOCORE_SHARDS)",
        description="The shards of POMOCORE_SHARDS: a producer in another language picks "
        "shard crc32(UTF-8 userId) mod N and XADDs to that shard's stream "
        "(docs/contract.md, 'Shards').",
    )
    add_json(shards, "the shards")
    shards.set_defaults(func=cmd_shards)
