"""Redis ACL users for least privilege: `producer`, `worker`, `reader`, `monitor`.

    producer  XADD to the input stream, nothing else
    worker    what `pomocore run` needs, key by key (below); no FLUSHALL, CONFIG, KEYS,
              INFO, no key outside its patterns, and on leaderboard keys only the
              increments, expiry and (derived mode) ZUNIONSTORE: no DEL, XDEL, XTRIM...
    reader    read-only on the leaderboard keys (ZREVRANGE/ZREVRANK/ZSCORE...)
    monitor   read-only on the streams and pomocore's own keys: what KEDA's
              redis-streams scaler (XINFO GROUPS, XPENDING, XLEN), metrics exporters and
              `pomocore check` read; no leaderboard, no write

The worker's permissions are four sets (ACL selectors: Redis >= 7.0, Valkey): a command is
allowed when one set allows the command and all of its keys.

    root         the input, dead-letter and session-score streams: the consumer group,
                 XADD, XTRIM, XLEN (no DEL, no XDEL); the patterns channel
    (selector)   `pomocore:*` keys: the bookkeeping commands (DEL included)
    (selector)   leaderboard keys: ZINCRBY, EXPIREAT, TYPE, ZUNIONSTORE only
    (selector)   EVAL/EVALSHA over all of them: the commit script names the streams, the
                 stale set and leaderboard keys at once. Each command a script runs is
                 checked again, so a script cannot DEL a leaderboard either.

With shards (POMOCORE_SHARDS > 1), every pattern of a stream, of `pomocore:*` keys and of
leaderboard keys comes twice: the contract's key, and the same name under any shard's
tag (`{shard:*}pattern_match_stream`...), so the producer may XADD to any shard and the
worker (consumers of any shard, `pomocore route`) reaches every shard's keys.

`pomocore acl [--users worker,reader] [--password-file ROLE=PATH ...]` prints an ACL
file (`aclfile` directive) or, with `--setuser`, `ACL SETUSER` commands. Rules are built
from the same KeySpace the pipeline uses, so a hash tag or renamed keys stay in step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from pomocore.core.keys import KeySpace
from pomocore.core.shards import SHARD_TAG_BASE

ROLES = ("producer", "worker", "reader", "monitor")

# Every client: connection set-up that redis-py sends (errors on CLIENT SETINFO are ignored,
# but allowing it keeps server logs clean).
_CONNECTION = ["+ping", "+hello", "+client|setinfo", "+client|setname", "+echo"]
# Cluster clients discover the slot map and command key positions.
_CLUSTER = ["+cluster|slots", "+cluster|shards", "+cluster|nodes", "+cluster|info",
            "+command", "+readonly"]  # fmt: skip

# The worker's root set: the input, dead-letter and session-score streams, commands
# without keys, the patterns channel.
_WORKER_COMMANDS = [
    # the consumer group on the input stream (reads, acknowledgements, reclaim, clean-up)
    "+xreadgroup", "+xack", "+xclaim", "+xautoclaim", "+xpending",
    "+xread",  # `pomocore route` waits for new entries of the contract stream (BLOCK)
    "+xgroup|create", "+xgroup|createconsumer", "+xgroup|delconsumer",
    "+xinfo|groups", "+xinfo|consumers", "+xinfo|stream",
    # dead letters and session scores (XADD); trimming and caps (consumers/trimming.py)
    "+xadd", "+xtrim", "+xlen",
    "+type",  # the commit script checks every key's type before its first write
    "+exists",  # probes and the group sampler
    # script loading (the scripts themselves run under the EVAL selector below)
    "+script|load", "+script|exists",
    "+multi", "+exec", "+discard",
    # pattern-change notifications
    "+subscribe", "+unsubscribe", "+publish",
]  # fmt: skip
# pomocore's own `pomocore:*` keys: pattern version, LLM budget and queue, learning
# counters and lock, derived-mode stale sets and lease, lost-to-trim.
_WORKER_BOOKKEEPING_COMMANDS = [
    "+get", "+set", "+mget", "+incr", "+incrby", "+exists", "+del", "+expire", "+pexpire",
    "+type", "+sadd", "+srem", "+smembers", "+sismember", "+scard", "+sunionstore",
    "+zadd", "+zrem", "+zcard", "+zrange", "+zrangebyscore", "+zscore",
    "+hincrby", "+hget", "+hmget", "+hgetall", "+hset", "+hsetnx", "+hdel",
]  # fmt: skip
# What the worker may do to a leaderboard key: the commit script's increments, expiry and
# type checks, derived mode's rebuild of weekly/monthly keys from days (sinks/derived.py).
_WORKER_LEADERBOARD_COMMANDS = ["+zincrby", "+expireat", "+type", "+zunionstore"]
_WORKER_SCRIPT_COMMANDS = ["+eval", "+evalsha"]

_READER_COMMANDS = [
    "+zrevrange", "+zrange", "+zrevrank", "+zrank", "+zscore", "+zmscore", "+zcard",
    "+exists", "+ttl",
    "+zcount", "+zrevrangebyscore",  # reads over shards: the members above a user
]  # fmt: skip

_MONITOR_COMMANDS = [
    # KEDA redis-streams (pendingEntriesCount: XPENDING, streamLength: XLEN, lagCount:
    # XINFO GROUPS), GroupSampler, `pomocore check`. Not XINFO STREAM: it shows the first
    # and last entries, and with FULL every one, which this role must not read.
    "+xinfo|groups", "+xinfo|consumers", "+xpending", "+xlen", "+exists",
    # pomocore:* gauges: lost-to-trim, derived staleness, LLM queue and budget
    "+get", "+mget", "+scard", "+zcard", "+zrange", "+type", "+ttl",
]  # fmt: skip


# A stand-in shard tag: the glob-escaped name of a shard's key with it, `*` put in its
# place, is the pattern of that key under any shard's tag (`\x00` is no glob character).
_ANY_SHARD = "\x00"


def _names(keys: KeySpace, shards: int, name: Callable[[KeySpace], str]) -> list[str]:
    """`name`'s glob-escaped key, plus (with shards) its pattern under any shard's tag."""
    out = [_glob(name(keys))]
    if shards > 1:
        any_shard = _glob(name(keys.for_shard(_ANY_SHARD)))
        out.append(any_shard.replace(_ANY_SHARD, f"{SHARD_TAG_BASE}:*"))
    return out


def _leaderboards(keys: KeySpace, shards: int = 1) -> list[str]:
    return [f"{p}*" for p in _names(keys, shards, KeySpace.leaderboard_prefix_key)]


def _streams(keys: KeySpace, shards: int = 1) -> list[str]:
    return [
        *_names(keys, shards, lambda k: k.stream_key),
        *_names(keys, shards, lambda k: k.dead_letter_key),
        *_names(keys, shards, lambda k: k.session_score_key),
    ]


def _own_keys(keys: KeySpace, shards: int = 1) -> list[str]:
    """pomocore's own keys: `{tag}pomocore:*` (the name of the lost-to-trim counter cut
    after `pomocore:`)."""
    return [f"{p[: p.rindex(':') + 1]}*" for p in _names(keys, shards, _lost_to_trim)]


def _lost_to_trim(keys: KeySpace) -> str:
    return keys.lost_to_trim_key


def key_patterns(keys: KeySpace, role: str, shards: int = 1) -> list[str]:
    """`~pattern` / `%R~pattern` key permissions of a role's root set (glob-escaped)."""
    if role == "producer":
        return [f"~{p}" for p in _names(keys, shards, lambda k: k.stream_key)]
    if role == "reader":
        return [f"%R~{p}" for p in _leaderboards(keys, shards)]
    if role == "worker":
        return [f"~{p}" for p in _streams(keys, shards)]
    if role == "monitor":
        return [f"%R~{p}" for p in [*_streams(keys, shards), *_own_keys(keys, shards)]]
    raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")


def selectors(keys: KeySpace, role: str, shards: int = 1) -> list[str]:
    """The role's ACL selectors, `(...)` each (the worker's; none for the others)."""
    if role != "worker":
        return []
    own = " ".join(f"~{p}" for p in _own_keys(keys, shards))
    lb = " ".join(f"~{p}" for p in _leaderboards(keys, shards))
    everything = " ".join([*(f"~{p}" for p in _streams(keys, shards)), own, lb])
    return [
        f"({own} {' '.join(_WORKER_BOOKKEEPING_COMMANDS)})",
        f"({lb} {' '.join(_WORKER_LEADERBOARD_COMMANDS)})",
        f"({everything} {' '.join(_WORKER_SCRIPT_COMMANDS)})",
    ]


def rules(keys: KeySpace, role: str, *, cluster: bool = False, shards: int = 1) -> list[str]:
    """ACL rules of a role, without `on` and the password."""
    out = ["resetkeys", "resetchannels", "-@all", *_CONNECTION]
    if cluster:
        out += _CLUSTER
    if role == "producer":
        out += ["+xadd"]
    elif role == "worker":
        out += _WORKER_COMMANDS
        out += [f"&{_glob(keys.patterns_channel)}"]
    elif role == "reader":
        out += _READER_COMMANDS
    elif role == "monitor":
        out += _MONITOR_COMMANDS
    out += key_patterns(keys, role, shards)
    out += selectors(keys, role, shards)
    return out


def password_rule(password: str) -> str:
    """`#<sha256>`: the file holds the hash, never the password."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def setuser_args(
    keys: KeySpace,
    role: str,
    password: str,
    *,
    name: str | None = None,
    cluster: bool = False,
    shards: int = 1,
) -> list[str]:
    """Arguments of `ACL SETUSER` (after the command name). A selector is one argument:
    quote it in a shell (`setuser_line` does)."""
    return [
        name or role,
        "reset",
        "on",
        password_rule(password),
        *rules(keys, role, cluster=cluster, shards=shards),
    ]


def setuser_line(
    keys: KeySpace,
    role: str,
    password: str,
    *,
    name: str | None = None,
    cluster: bool = False,
    shards: int = 1,
) -> str:
    """`ACL SETUSER ...` as redis-cli reads it: each selector in double quotes."""
    words = setuser_args(keys, role, password, name=name, cluster=cluster, shards=shards)
    return "ACL SETUSER " + " ".join(f'"{w}"' if " " in w else w for w in words)


def acl_file(
    keys: KeySpace,
    passwords: dict[str, str],
    *,
    cluster: bool = False,
    names: dict[str, str] | None = None,
    shards: int = 1,
) -> str:
    """An ACL file for the roles in `passwords` (`user NAME on #hash rules...`)."""
    lines = []
    for role, password in passwords.items():
        name = (names or {}).get(role, role)
        rule = " ".join(
            ["on", password_rule(password), *rules(keys, role, cluster=cluster, shards=shards)]
        )
        lines.append(f"user {name} {rule}")
    return "\n".join(lines) + "\n"


def _glob(name: str) -> str:
    """Escape glob metacharacters of a literal key or channel name."""
    out = []
    for ch in name:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)
