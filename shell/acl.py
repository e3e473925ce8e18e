"""Redis ACL users for least privilege: `producer`, `worker`, `reader`.

    producer  XADD to the input stream, nothing else
    worker    what `pomocore run` needs: the consumer group on the input stream, the
              dead-letter and session-score streams, leaderboard increments and expiry,
              pomocore's own `pomocore:*` keys, the patterns channel; no FLUSHALL,
              no CONFIG, no KEYS, no key outside its patterns
    reader    read-only on the leaderboard keys (ZREVRANGE/ZREVRANK/ZSCORE...)

`pomocore acl [--users worker,reader] [--password-file ROLE=PATH ...]` prints an ACL
file (`aclfile` directive) or, with `--setuser`, `ACL SETUSER` commands. Rules are built
from the same KeySpace the pipeline uses, so a hash tag or renamed keys stay in step.
"""

from __future__ import annotations

import hashlib

from pomocore.core.keys import KeySpace

ROLES = ("producer", "worker", "reader")

# Every client: connection set-up that redis-py sends (errors on CLIENT SETINFO are ignored,
# but allowing it keeps server logs clean).
_CONNECTION = ["+ping", "+hello", "+client|setinfo", "+client|setname", "+echo"]
# Cluster clients discover the slot map and command key positions.
_CLUSTER = ["+cluster|slots", "+cluster|shards", "+cluster|nodes", "+cluster|info",
            "+command", "+readonly"]  # fmt: skip

_WORKER_COMMANDS = [
    # consumer group on the input stream; dead letters; session scores; trimming
    "+xreadgroup", "+xack", "+xclaim", "+xautoclaim", "+xpending",
    "+xgroup|create", "+xgroup|createconsumer", "+xgroup|delconsumer",
    "+xinfo|groups", "+xinfo|consumers", "+xinfo|stream",
    "+xadd", "+xtrim", "+xlen", "+xrange", "+xdel",
    # the commit script and the other scripts (LLM budget, queue, reclaim, trim)
    "+eval", "+evalsha", "+script|load", "+script|exists",
    # leaderboards: increments and retention
    "+zincrby", "+expireat", "+expire", "+ttl",
    "+type",  # the commit script checks every key's type before its first write
    "+zunionstore", "+sunionstore",  # derived mode: weekly/monthly rebuilt from days
    # pomocore:* bookkeeping (pattern version, LLM budget/queue, learning, lost-to-trim)
    "+get", "+set", "+mget", "+incr", "+incrby", "+exists", "+del",
    "+sadd", "+srem", "+smembers", "+sismember", "+scard",
    "+zadd", "+zrem", "+zcard", "+zrangebyscore", "+zscore",
    "+hincrby", "+hget", "+hgetall", "+hset", "+hdel",
    "+multi", "+exec", "+discard",
    # pattern-change notifications
    "+subscribe", "+unsubscribe", "+publish",
]  # fmt: skip

_READER_COMMANDS = [
    "+zrevrange", "+zrange", "+zrevrank", "+zrank", "+zscore", "+zmscore", "+zcard",
    "+exists", "+ttl",
]  # fmt: skip


def key_patterns(keys: KeySpace, role: str) -> list[str]:
    """`~pattern` / `%R~pattern` key permissions of a role (glob-escaped names)."""
    tag = f"{{{keys.hash_tag}}}" if keys.hash_tag else ""
    lb = f"~{_glob(tag + keys.leaderboard_prefix)}:*"
    if role == "producer":
        return [f"~{_glob(keys.stream_key)}"]
    if role == "reader":
        return ["%R" + lb]
    if role == "worker":
        return [
            f"~{_glob(keys.stream_key)}",
            f"~{_glob(keys.dead_letter_key)}",
            f"~{_glob(keys.session_score_key)}",
            lb,
            f"~{_glob(tag)}pomocore:*",
        ]
    raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")


def rules(keys: KeySpace, role: str, *, cluster: bool = False) -> list[str]:
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
    out += key_patterns(keys, role)
    return out


def password_rule(password: str) -> str:
    """`#<sha256>`: the file holds the hash, never the password."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def setuser_args(
    keys: KeySpace, role: str, password: str, *, name: str | None = None, cluster: bool = False
) -> list[str]:
    """Arguments of `ACL SETUSER` (after the command name)."""
    return [
        name or role,
        "reset",
        "on",
        password_rule(password),
        *rules(keys, role, cluster=cluster),
    ]


def acl_file(
    keys: KeySpace,
    passwords: dict[str, str],
    *,
    cluster: bool = False,
    names: dict[str, str] | None = None,
) -> str:
    """An ACL file for the roles in `passwords` (`user NAME on #hash rules...`)."""
    lines = []
    for role, password in passwords.items():
        name = (names or {}).get(role, role)
        rule = " ".join(["on", password_rule(password), *rules(keys, role, cluster=cluster)])
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
