"""`pomocore dlq list|replay|purge`: operate on the dead-letter stream.

A dead letter is the original entry's fields plus `dlq.*` fields (reason, field, detail,
entry_id, stream, consumer), see sinks/commit.py.

Replay puts a dead letter back on the input stream after a fix, in one script per entry
(XADD to the input stream + XDEL from the dead-letter stream: never both or neither
half-done). A `max_deliveries` entry may already have written its usage log before its
consumer crashed: when that document exists in MongoDB and names the entry's user, the
replayed entry carries its id as `pomodoroUsageLogId` (unless it had one), and the replay
updates that document instead of adding a second one. Only then: a producer-supplied id
never creates a usage log (docs/guarantees.md, "Ownership of producer-supplied ids"), so
an id pinned to a document that does not exist would be dead-lettered again as
`unknown_document`. Its leaderboard increments were never applied (they are applied only
together with the acknowledgement), so the replay applies them once.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import redis
from bson import ObjectId

from pomocore.cli_format import add_json, bounded_int, logging_parent
from pomocore.core.connect import CLI_TIMEOUT_S, sync_mongo, sync_redis
from pomocore.core.ids import stream_tag, usage_log_id
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.core.shards import MAX_SHARDS
from pomocore.progress import Progress

PAGE = 500

OwnedLogs = Callable[[Mapping[str, str]], set[str]]
"""(usage-log id hex -> userId) -> the ids whose document exists and names that user."""

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


def reason_counts(client: redis.Redis, keys: KeySpace, limit: int | None = None) -> Counter[str]:
    """Dead letters by reason ("?" for none), of the oldest `limit` (all by default)."""
    return Counter(view.reason or "?" for view in iter_dead_letters(client, keys, None, limit))


def pinned_usage_log_id(view: DeadLetterView) -> str:
    entry_id = view.meta("entry_id")
    stream = view.meta("stream")
    if not entry_id or not stream:
        return ""
    try:
        return str(usage_log_id(stream_tag(stream), entry_id))
    except (ValueError, TypeError):
        return ""


def owned_usage_logs(settings: Settings) -> OwnedLogs:
    """An `OwnedLogs` that asks the usage-log collection, one find by `_id` per page."""

    def owned(wanted: Mapping[str, str]) -> set[str]:
        client = sync_mongo(settings)
        found: set[str] = set()
        try:
            coll = client[settings.mongo_db]["pomodoro_usage_log"]
            ids = list(wanted)
            for start in range(0, len(ids), PAGE):
                page = [ObjectId(i) for i in ids[start : start + PAGE]]
                for doc in coll.find({"_id": {"$in": page}}, {"userId": 1}):
                    doc_id = str(doc["_id"])
                    if doc.get("userId") == wanted.get(doc_id):
                        found.add(doc_id)
        finally:
            client.close()
        return found

    return owned


def _pins(views: list[DeadLetterView], owned: OwnedLogs | None) -> dict[str, str]:
    """Dead-letter id -> the usage-log id its replay carries: the original entry's, where
    that document exists and names the entry's user."""
    if owned is None:
        return {}
    wanted: dict[str, str] = {}
    by_view: dict[str, str] = {}
    for view in views:
        pin = pinned_usage_log_id(view)
        user = view.fields.get(b"userId", b"").decode("utf-8", "replace")
        if pin and user:
            wanted[pin] = user
            by_view[view.id] = pin
    if not wanted:
        return {}
    exists = owned(wanted)
    return {view_id: pin for view_id, pin in by_view.items() if pin in exists}


def replay(
    client: redis.Redis,
    keys: KeySpace,
    reason: str | None = None,
    limit: int | None = None,
    owned: OwnedLogs | None = None,
    progress: Progress | None = None,
) -> list[tuple[str, str]]:
    """Move dead letters back to the input stream; returns (dead-letter id, new entry id).

    `owned` (None: no MongoDB sink, nothing to pin) says which original usage logs exist.
    """
    script = client.register_script(REPLAY_SCRIPT)
    done: list[tuple[str, str]] = []
    views = list(iter_dead_letters(client, keys, reason, limit))
    pins = _pins(views, owned)
    if progress is not None:
        progress.set_total(len(views))
    for view in views:
        new_id = script(
            keys=[keys.dead_letter_key, keys.stream_key],
            args=[view.id, pins.get(view.id, "")],
        )
        if new_id:
            done.append((view.id, new_id.decode() if isinstance(new_id, bytes) else new_id))
        if progress is not None:
            progress.advance()
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
    *,
    as_json: bool = False,
    dry_run: bool = False,
    progress_stream: TextIO | None = None,
    shard: int | None = None,
) -> int:
    """`shard`: one shard's dead letters (POMOCORE_SHARDS > 1); default every shard's, in
    turn, each replayed to its own shard's stream."""
    client = sync_redis(settings, timeout_s=CLI_TIMEOUT_S)
    shards = settings.all_shard_keys if shard is None else (settings.shard_keys(shard),)
    try:
        if action == "list":
            left = limit or 100
            for keys in shards:
                if left <= 0:
                    break
                for view in iter_dead_letters(client, keys, reason, left):
                    out.write(orjson.dumps(view.as_json()).decode() + "\n")
                    left -= 1
            return 0
        if action == "replay":
            owned = owned_usage_logs(settings) if "mongo" in settings.sinks else None
            for keys in shards:
                _replay(client, keys, reason, limit, out, as_json, dry_run, progress_stream, owned)
            return 0
        if action == "purge":
            codes = [_purge(client, keys, reason, limit, yes, out, as_json) for keys in shards]
            return max(codes)
        raise ValueError(f"unknown dlq action {action!r}")
    finally:
        client.close()


def _replay(
    client: redis.Redis,
    keys: KeySpace,
    reason: str | None,
    limit: int | None,
    out: TextIO,
    as_json: bool,
    dry_run: bool,
    progress_stream: TextIO | None,
    owned: OwnedLogs | None,
) -> None:
    """The summary (`--json`: {dry_run, stream, count, entries}) of a replay or, with
    `dry_run`, of what a replay would move (nothing is written)."""
    if dry_run:
        views = list(iter_dead_letters(client, keys, reason, limit))
        entries = [{"dead_letter": v.id, "reason": v.reason, "replayed_as": None} for v in views]
    else:
        with Progress("dlq replay", unit="entries", stream=progress_stream) as progress:
            moved = replay(client, keys, reason, limit, owned, progress)
        entries = [{"dead_letter": old, "replayed_as": new} for old, new in moved]
    if as_json:
        doc = {"dry_run": dry_run, "stream": keys.stream_key, "count": len(entries)}
        out.write(orjson.dumps({**doc, "entries": entries}).decode() + "\n")
        return
    for entry in entries:
        out.write(orjson.dumps(entry).decode() + "\n")
    verb = "would replay" if dry_run else "replayed"
    tail = " (--dry-run: nothing moved)" if dry_run else ""
    out.write(f"{verb} {len(entries)} dead letters to {keys.stream_key}{tail}\n")


def _purge(
    client: redis.Redis,
    keys: KeySpace,
    reason: str | None,
    limit: int | None,
    yes: bool,
    out: TextIO,
    as_json: bool,
) -> int:
    if not yes:
        n = sum(1 for _ in iter_dead_letters(client, keys, reason, limit))
        if as_json:
            out.write(orjson.dumps({"deleted": 0, "would_delete": n}).decode() + "\n")
        else:
            out.write(f"would delete {n} dead letters; add --yes to delete them\n")
        return 1
    deleted = purge(client, keys, reason, limit)
    if as_json:
        out.write(orjson.dumps({"deleted": deleted, "would_delete": None}).decode() + "\n")
    else:
        out.write(f"deleted {deleted} dead letters\n")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    settings = Settings.from_env(log_format=args.log_format, log_level=args.log_level)
    if args.dry_run and args.action != "replay":
        print(
            "pomocore: --dry-run goes with dlq replay (purge without --yes is its own)",
            file=sys.stderr,
        )
        return 2
    return dlq_command(
        args.action,
        settings,
        args.reason,
        args.limit,
        args.yes,
        sys.stdout,  # now, not at import: a caller may have redirected it since
        as_json=args.json,
        dry_run=args.dry_run,
        shard=args.shard,
    )


def register(sub: Any) -> None:
    """`pomocore dlq list|replay|purge` in pomocore's subparsers."""
    p = sub.add_parser(
        "dlq",
        parents=[logging_parent()],
        help="list, replay or purge dead letters",
        description="list: dead letters as JSON lines; replay: put them back on the input "
        "stream (after a fix); purge: delete them (with --yes).",
    )
    p.add_argument(
        "action",
        choices=("list", "replay", "purge"),
        help="list: print them; replay: put them back on the input stream; purge: delete them",
    )
    p.add_argument(
        "--reason", help="only dead letters with this reason, e.g. max_deliveries (default: all)"
    )
    p.add_argument(
        "--limit",
        type=bounded_int(1, 10**9),
        help="at most this many (default: 100 for list, all for replay and purge)",
    )
    p.add_argument("--yes", action="store_true", help="purge: really delete")
    p.add_argument(
        "--dry-run", action="store_true", help="replay: show what would move, move nothing"
    )
    p.add_argument(
        "--shard",
        type=bounded_int(0, MAX_SHARDS - 1),
        help="only this shard's dead letters (POMOCORE_SHARDS > 1; default: every shard's, "
        "each summary on its own line)",
    )
    add_json(p, "replay and purge's summary")
    p.set_defaults(func=cmd_dlq)
