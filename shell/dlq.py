"""`pomocore dlq list|replay|purge`: operate on the dead-letter stream.

A dead letter is the original entry's fields plus `dlq.*` fields (reason, field, detail,
entry_id, stream, consumer), see sinks/commit.py.

Replay puts a dead letter back on the input stream after a fix, in one script per entry
(XADD to the input stream + XDEL from the dead-letter stream: never both or neither
half-done). The replayed entry carries `pomodoroUsageLogId` = the usage-log id of the
original entry (unless it had one): a `max_deliveries` entry may already have written
its usage log before its consumer crashed, and the replay then updates that document
instead of adding a second one. Its leaderboard increments were never applied (they are
applied only together with the acknowledgement), so the replay applies them once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import redis

from pomocore.core.connect import CLI_TIMEOUT_S, sync_redis
from pomocore.core.ids import stream_tag, usage_log_id
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings

PAGE = 500

# KEYS[1] dead-letter stream, KEYS[2] input stream; ARGV[1] dead-letter id,
# ARGV[2] usage-log id to pin ('' = none). Returns the new entry id, or false if gone or
# without original fields (too_large: the entry was never copied, docs/contract.md).
REPLAY_SCRIPT = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields = found[1][2]
local out = {}
local pinned = false
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 4) ~= 'dlq.' then
    out[#out + 1] = fields[i]
    out[#out + 1] = fields[i + 1]
    if fields[i] == 'pomodoroUsageLogId' and fields[i + 1] ~= '' then pinned = true end
  end
end
-- No original field (a too_large dead letter): nothing to replay; it stays.
if #out == 0 then return false end
if not pinned and ARGV[2] ~= '' then
  out[#out + 1] = 'pomodoroUsageLogId'
  out[#out + 1] = ARGV[2]
end
local new_id = redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id
"""


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    id: str
    fields: dict[bytes, bytes]

    def meta(self, name: str) -> str:
        return self.fields.get(b"dlq." + name.encode(), b"").decode("utf-8", "replace")

    @property
    def reason(self) -> str:
        return self.meta("reason")

    def as_json(self) -> dict[str, Any]:
        original = {
            k.decode("utf-8", "backslashreplace"): v.decode("utf-8", "backslashreplace")
            for k, v in self.fields.items()
            if not k.startswith(b"dlq.")
        }
        return {
            "id": self.id,
            "reason": self.reason,
            "field": self.meta("field"),
            "detail": self.meta("detail"),
            "entry_id": self.meta("entry_id"),
            "consumer": self.meta("consumer"),
            "fields": original,
        }


def iter_dead_letters(
    client: redis.Redis, keys: KeySpace, reason: str | None = None, limit: int | None = None
) -> Iterator[DeadLetterView]:
    """Dead letters oldest first, optionally only those with `reason`, at most `limit`."""
    start = "-"
    seen = 0
    while limit is None or seen < limit:
        page: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
            keys.dead_letter_key, start, "+", count=PAGE
        )
        for raw_id, fields in page:
            view = DeadLetterView(raw_id.decode(), fields)
            if reason is None or view.reason == reason:
                yield view
                seen += 1
                if limit is not None and seen >= limit:
                    return
        if len(page) < PAGE:
            return
        start = "(" + page[-1][0].decode()


def pinned_usage_log_id(view: DeadLetterView) -> str:
    entry_id = view.meta("entry_id")
    stream = view.meta("stream")
    if not entry_id or not stream:
        return ""
    try:
        return str(usage_log_id(stream_tag(stream), entry_id))
    except (ValueError, TypeError):
        return ""


def replay(
    client: redis.Redis, keys: KeySpace, reason: str | None = None, limit: int | None = None
) -> list[tuple[str, str]]:
    """Move dead letters back to the input stream; returns (dead-letter id, new entry id)."""
    script = client.register_script(REPLAY_SCRIPT)
    done: list[tuple[str, str]] = []
    for view in list(iter_dead_letters(client, keys, reason, limit)):
        new_id = script(
            keys=[keys.dead_letter_key, keys.stream_key],
            args=[view.id, pinned_usage_log_id(view)],
        )
        if new_id:
            done.append((view.id, new_id.decode() if isinstance(new_id, bytes) else new_id))
    return done


def purge(
    client: redis.Redis, keys: KeySpace, reason: str | None = None, limit: int | None = None
) -> int:
    ids = [v.id for v in iter_dead_letters(client, keys, reason, limit)]
    deleted = 0
    for i in range(0, len(ids), PAGE):
        deleted += int(client.xdel(keys.dead_letter_key, *ids[i : i + PAGE]))
    return deleted


def dlq_command(
    action: str,
    settings: Settings,
    reason: str | None,
    limit: int | None,
    yes: bool,
    out: TextIO = sys.stdout,
) -> int:
    client = sync_redis(settings, timeout_s=CLI_TIMEOUT_S)
    keys = settings.keys
    try:
        if action == "list":
            for view in iter_dead_letters(client, keys, reason, limit or 100):
                out.write(orjson.dumps(view.as_json()).decode() + "\n")
            return 0
        if action == "replay":
            moved = replay(client, keys, reason, limit)
            for old, new in moved:
                out.write(orjson.dumps({"dead_letter": old, "replayed_as": new}).decode() + "\n")
            out.write(f"replayed {len(moved)} dead letters to {keys.stream_key}\n")
            return 0
        if action == "purge":
            if not yes:
                n = sum(1 for _ in iter_dead_letters(client, keys, reason, limit))
                out.write(f"would delete {n} dead letters; add --yes to delete them\n")
                return 1
            out.write(f"deleted {purge(client, keys, reason, limit)} dead letters\n")
            return 0
        raise ValueError(f"unknown dlq action {action!r}")
    finally:
        client.close()


def cmd_dlq(args: argparse.Namespace) -> int:
    settings = Settings.from_env(log_format=args.log_format, log_level=args.log_level)
    return dlq_command(args.action, settings, args.reason, args.limit, args.yes)


def register(sub: Any) -> None:
    """`pomocore dlq list|replay|purge` in pomocore's subparsers."""
    p = sub.add_parser("dlq", help="list, replay or purge dead letters")
    p.add_argument("action", choices=("list", "replay", "purge"))
    p.add_argument("--reason", help="only dead letters with this reason (e.g. max_deliveries)")
    p.add_argument("--limit", type=int, help="at most this many (list: default 100)")
    p.add_argument("--yes", action="store_true", help="purge: really delete")
    p.add_argument("--log-format", choices=("json", "text"), help="POMOCORE_LOG_FORMAT")
    p.add_argument("--log-level", help="POMOCORE_LOG_LEVEL")
    p.set_defaults(func=cmd_dlq)
