"""`pomocore leaderboard rebuild --from-mongo --start DATE --end DATE [--check]`.

Recomputes leaderboard keys from `pomodoro_usage_log` (CONTRACT §3–4): every usage log
adds its `duration` to the daily, weekly and monthly keys of its `category` (and of
`work` for a work category), periods taken from its `timestamp` in the configured time
zone. The dates are local dates in that zone, both inclusive.

Scope: the daily keys of the dates in the range, and the weekly and monthly keys of every
ISO week and month that touches the range. Weekly and monthly keys are recomputed from
all their usage logs (the query is widened to whole weeks and months), never from the
part inside the range.

Each key is written atomically: the new scores go into a temporary key (same hash slot)
which then replaces the key in one script (RENAME, keeping the old key's TTL). A key in
scope with no usage log is deleted. `--check` writes nothing and reports differences.

Run it when the group has nothing pending for the range (consumers drained, or a closed
period): a usage log written whose entry is not yet acknowledged has its increments
still to come, and a rebuild would count it twice. The command warns when it sees
pending entries.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

import orjson
import redis as redis_module

from pomocore.cli_format import add_json, logging_parent
from pomocore.core.categories import WORK, WORK_CATEGORIES
from pomocore.core.connect import CLI_TIMEOUT_S, sync_mongo, sync_redis
from pomocore.core.periods import PeriodCalculator, periods_of_datetime
from pomocore.core.settings import Settings
from pomocore.core.shards import SHARD_TAG_BASE, shard_of
from pomocore.progress import Progress

if TYPE_CHECKING:
    import redis

TOLERANCE = 1e-6  # relative, as float sums differ by summation order (docs/guarantees.md)
ZADD_CHUNK = 1000

# KEYS[1] the key, KEYS[2] the filled temporary key: replace, keeping the key's TTL.
REPLACE_SCRIPT = """
local ttl = redis.call('PTTL', KEYS[1])
redis.call('RENAME', KEYS[2], KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return ttl
"""

Scores = dict[str, dict[str, float]]


@dataclass(slots=True)
class KeyDiff:
    key: str
    missing: dict[str, float] = field(default_factory=dict)  # expected, absent in Redis
    extra: dict[str, float] = field(default_factory=dict)  # in Redis, not expected
    different: dict[str, tuple[float, float]] = field(default_factory=dict)  # (actual, exp)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "missing": self.missing,
            "extra": self.extra,
            "different": {u: {"actual": a, "expected": e} for u, (a, e) in self.different.items()},
        }


@dataclass(slots=True)
class Scope:
    labels: set[str]
    start_s: float  # query window [start_s, end_s) in unix seconds
    end_s: float


def scope_of(start: date, end: date, timezone: str) -> Scope:
    """Period labels rebuilt for local dates start..end, and the usage-log query window."""
    if end < start:
        raise ValueError("--end is before --start")
    zone = ZoneInfo(timezone)
    labels: set[str] = set()
    lo, hi = start, end + timedelta(days=1)
    day = start
    while day <= end:
        p = periods_of_datetime(datetime.combine(day, time(), zone))
        labels.update(p.labels())
        week_start = day - timedelta(days=day.weekday())
        month_start = day.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        lo = min(lo, week_start, month_start)
        hi = max(hi, week_start + timedelta(days=7), next_month)
        day += timedelta(days=1)
    # dailies outside the range are computed from the widened query but not in scope
    daily_out = set()
    day = lo
    while day < hi:
        if not start <= day <= end:
            daily_out.add(day.isoformat())
        day += timedelta(days=1)
    labels -= daily_out
    return Scope(
        labels,
        datetime.combine(lo, time(), zone).timestamp(),
        datetime.combine(hi, time(), zone).timestamp(),
    )


def _timestamp(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return None


def expected_scores(docs: Iterable[dict[str, Any]], settings: Settings, scope: Scope) -> Scores:
    """Key → user → score; with shards, each user's keys are those of its shard."""
    periods = PeriodCalculator(settings.timezone)
    shard_keys = settings.all_shard_keys
    out: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for doc in docs:
        ts = _timestamp(doc.get("timestamp"))
        duration = doc.get("duration")
        user, category = doc.get("userId"), doc.get("category")
        if ts is None or not isinstance(duration, int | float) or not user or not category:
            continue
        cats = (category, WORK) if category in WORK_CATEGORIES else (category,)
        keys = shard_keys[shard_of(str(user), settings.shards)]
        for label in periods(ts).labels():
            if label in scope.labels:
                for cat in cats:
                    out[keys.leaderboard(cat, label)][str(user)] += float(duration)
    return {k: dict(v) for k, v in out.items()}


def usage_logs(settings: Settings, scope: Scope) -> Iterator[dict[str, Any]]:
    client = sync_mongo(settings)
    try:
        coll = client[settings.mongo_db]["pomodoro_usage_log"]
        query = {"timestamp": {"$gte": scope.start_s, "$lt": scope.end_s}}
        projection = {"userId": 1, "category": 1, "timestamp": 1, "duration": 1, "_id": 0}
        yield from coll.find(query, projection)
    finally:
        client.close()


def existing_keys(client: redis.Redis, settings: Settings, scope: Scope) -> set[str]:
    """The leaderboard keys of the scope's periods. With shards: every shard's, those of
    shard tags no longer in use included (after POMOCORE_SHARDS changed, they hold what the
    new shards now count: the rebuild deletes them); the contract's own names are left to
    `pomocore leaderboard materialize`."""
    found: set[str] = set()
    for label in scope.labels:
        for key in client.scan_iter(match=_key_pattern(settings, label), count=1000):
            found.add(key.decode())
    return found


def _key_pattern(settings: Settings, label: str) -> str:
    if settings.shards == 1:
        return settings.keys.leaderboard("*", label)
    # `{shard:*}leaderboard:*:2026-11-30`: `{` and `}` are plain characters in a pattern
    any_shard = settings.keys.for_shard(f"{SHARD_TAG_BASE}:*")
    return any_shard.leaderboard("*", label)


def actual_scores(client: redis.Redis, keys: Iterable[str]) -> Scores:
    out: Scores = {}
    for key in keys:
        rows: list[tuple[bytes, float]] = client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
        out[key] = {m.decode(): float(s) for m, s in rows}
    return out


def close_enough(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def differences(actual: Scores, expected: Scores) -> list[KeyDiff]:
    diffs: list[KeyDiff] = []
    for key in sorted(set(actual) | set(expected)):
        have, want = actual.get(key, {}), expected.get(key, {})
        d = KeyDiff(key)
        for user, score in want.items():
            if user not in have:
                d.missing[user] = score
            elif not close_enough(have[user], score):
                d.different[user] = (have[user], score)
        d.extra = {u: s for u, s in have.items() if u not in want}
        if d.missing or d.extra or d.different:
            diffs.append(d)
    return diffs


def replace_key(client: redis.Redis, key: str, scores: dict[str, float]) -> None:
    if not scores:
        client.delete(key)
        return
    temp = f"{key}:rebuild:{uuid.uuid4().hex[:12]}"
    items = list(scores.items())
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(items), ZADD_CHUNK):
        pipe.zadd(temp, dict(items[i : i + ZADD_CHUNK]))
    pipe.pexpire(temp, 3_600_000)  # a crash before the rename leaves no permanent garbage
    pipe.execute()
    client.register_script(REPLACE_SCRIPT)(keys=[key, temp])


@dataclass(slots=True)
class RebuildReport:
    keys_in_scope: int
    diffs: list[KeyDiff]
    written: int
    pending: int


def rebuild(
    client: redis.Redis,
    settings: Settings,
    start: date,
    end: date,
    check: bool,
    docs: Iterable[dict[str, Any]] | None = None,
    progress_stream: TextIO | None = None,
) -> RebuildReport:
    scope = scope_of(start, end, settings.timezone)
    with Progress("rebuild: usage logs read", unit="logs", stream=progress_stream) as read:
        source = docs if docs is not None else usage_logs(settings, scope)
        expected = expected_scores(read.each(source), settings, scope)
    in_scope = existing_keys(client, settings, scope) | set(expected)
    with Progress(
        "rebuild: keys compared", len(in_scope), unit="keys", stream=progress_stream
    ) as compared:
        actual = actual_scores(client, compared.each(sorted(in_scope)))
    diffs = differences({k: v for k, v in actual.items() if v}, expected)
    written = 0
    if not check:
        with Progress(
            "rebuild: keys written", len(diffs), unit="keys", stream=progress_stream
        ) as writing:
            for d in writing.each(diffs):
                replace_key(client, d.key, expected.get(d.key, {}))
                written += 1
    return RebuildReport(len(in_scope), diffs, written, _pending(client, settings))


def _pending(client: redis.Redis, settings: Settings) -> int:
    """Entries pending in the group, over the shards."""
    total = 0
    for keys in settings.all_shard_keys:
        try:
            info: dict[str, Any] = client.xpending(keys.stream_key, settings.group)
            total += int(info.get("pending") or 0)
        except redis_module.ResponseError:
            pass
    return total


def rebuild_command(
    settings: Settings,
    start: date,
    end: date,
    check: bool,
    out: TextIO = sys.stdout,
    *,
    as_json: bool = False,
    progress_stream: TextIO | None = None,
) -> int:
    client = sync_redis(settings, timeout_s=CLI_TIMEOUT_S)
    try:
        report = rebuild(client, settings, start, end, check, progress_stream=progress_stream)
    finally:
        client.close()
    if as_json:
        doc = {
            "check": check,
            "keys_in_scope": report.keys_in_scope,
            "differ": len(report.diffs),
            "written": report.written,
            "pending": report.pending,
            "diffs": [d.as_json() for d in report.diffs],
        }
        out.write(orjson.dumps(doc).decode() + "\n")
        return 1 if check and report.diffs else 0
    for d in report.diffs:
        out.write(orjson.dumps(d.as_json()).decode() + "\n")
    verb = "differ" if check else "rewritten"
    out.write(
        f"{report.keys_in_scope} keys in scope, {len(report.diffs)} {verb}"
        f"{'' if check else f' ({report.written} written)'}\n"
    )
    if report.pending:
        out.write(
            f"warning: {report.pending} entries are pending in the group; their usage logs"
            " may be counted before their increments are applied. Rebuild after a drain.\n"
        )
    return 1 if check and report.diffs else 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    settings = Settings.from_env(log_format=args.log_format, log_level=args.log_level)
    try:
        start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    except ValueError as exc:
        print(f"pomocore: bad date: {exc}", file=sys.stderr)
        return 2
    if end < start:
        print("pomocore: --end is before --start", file=sys.stderr)
        return 2
    # (sys.stdout now, not at import: a caller may have redirected it since)
    return rebuild_command(settings, start, end, args.check, sys.stdout, as_json=args.json)


def register(actions: Any) -> None:
    """`pomocore leaderboard rebuild` in the `leaderboard` action subparsers."""
    p = actions.add_parser(
        "rebuild",
        parents=[logging_parent()],
        help="recompute leaderboard keys from usage logs (--check: compare only)",
    )
    p.add_argument(
        "--from-mongo",
        action="store_true",
        required=True,
        help="source: pomodoro_usage_log (the only source; required)",
    )
    p.add_argument("--start", required=True, help="first local date YYYY-MM-DD (required)")
    p.add_argument("--end", required=True, help="last local date YYYY-MM-DD, inclusive (required)")
    p.add_argument("--check", action="store_true", help="only report differences (exit 1 if any)")
    add_json(p)
    p.set_defaults(func=cmd_rebuild)
