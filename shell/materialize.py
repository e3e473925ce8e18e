"""`pomocore leaderboard materialize`: the contract's leaderboard keys rebuilt from the
shards, for readers that query Redis directly (POMOCORE_SHARDS > 1; opt-in).

    pomocore leaderboard materialize                  # a pass every 10 s until stopped
    pomocore leaderboard materialize --once --json    # one pass, its report

With shards, each shard keeps its own `{shard:i:j}leaderboard:{category}:{period}` keys
and the reader library, CLI and HTTP API merge them (shell/reader.py). The contract's
`leaderboard:{category}:{period}` keys (CONTRACT §4; under POMOCORE_KEY_HASH_TAG when it
is set) are written by nobody but this command.

A pass covers the boards of the current periods: every category of the taxonomy and
`work`, for the daily, weekly and monthly labels of today and of the `--days - 1` days
before it (in POMOCORE_TIMEZONE; yesterday's boards by default, so late events of a day
that just ended still reach its key). Per board:

1. one pipeline counts the board's members in every shard (all boards at once): a board
   empty everywhere is skipped, or deleted when its contract key is still there;
2. one pipeline reads the board's key in every shard whole (ZRANGE 0 -1 WITHSCORES: each
   shard's members at one instant); a user's score is the sum over the shards (a user
   lives in one shard: the sum is its score);
3. the board is written into a staging key beside the contract key (same hash slot:
   the contract key leads its name, KeySpace.staging_key), in ZADD chunks, set to expire
   in STAGING_TTL_MS should the pass die there;
4. one script renames the staging key over the contract key and sets its expiry
   (POMOCORE_TTL_*): a reader sees the previous board or the new one, never a half-written
   one, and a member gone from every shard is gone from the contract key.

Staleness: a contract key holds what the shards held when its pass read them, so while
the materializer runs it is at most `--interval-s` plus one pass (its `elapsed_s`)
behind. Cost: each pass reads and writes every member of every current board (O(members),
not O(changes)); for boards of millions of members, use the reader library or a longer
interval. Run one materializer: two are safe (each rename installs one consistent board)
but do the work twice. It needs a Redis user that reads the shards' keys and writes the
contract keys (ZADD, PEXPIRE, DEL, EVALSHA of RENAME, EXPIREAT, PERSIST): neither the
`reader` nor the `worker` ACL user. A Redis failure ends the command (exit 3) for its
supervisor to restart it; SIGTERM ends it after the pass under way.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TextIO
from zoneinfo import ZoneInfo

from pomocore.cli_format import add_json, bounded_float, bounded_int, logging_parent
from pomocore.core.categories import CATEGORIES, WORK
from pomocore.core.connect import CLI_TIMEOUT_S, sync_redis
from pomocore.core.expiry import expire_at_function
from pomocore.core.keys import KeySpace
from pomocore.core.periods import periods_of_datetime
from pomocore.core.settings import Settings

BOARD_CATEGORIES: Final = (*CATEGORIES, WORK)
STAGING_TTL_MS: Final = 60_000
ZADD_CHUNK: Final = 1000  # members per ZADD of a staging key
# KEYS[1] the contract key, KEYS[2] its filled staging key; ARGV[1] unix expiry or ''.
REPLACE_SCRIPT: Final = """
redis.call('RENAME', KEYS[2], KEYS[1])
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('EXPIREAT', KEYS[1], ARGV[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class PassReport:
    """One pass: contract keys written and deleted, members written, seconds taken."""

    written: int
    deleted: int
    members: int
    elapsed_s: float
    labels: tuple[str, ...]

    def line(self) -> str:
        return (
            f"materialized {self.written} boards ({self.members} members), deleted "
            f"{self.deleted}, periods {' '.join(self.labels)}, in {self.elapsed_s:.3f} s"
        )


def labels_of(now_s: float, timezone: str, days: int) -> tuple[str, ...]:
    """The daily, weekly and monthly labels of the local dates of `now_s` and the
    `days - 1` dates before it, each once."""
    today = datetime.fromtimestamp(now_s, ZoneInfo(timezone)).date()
    labels: dict[str, None] = {}
    for back in range(days):
        labels.update(dict.fromkeys(periods_of_datetime(today - timedelta(days=back)).labels()))
    return tuple(labels)


class Materializer:
    """Passes over the current boards of one deployment (`settings`, shards > 1)."""

    def __init__(self, client: Any, settings: Settings) -> None:
        self.client = client
        self.contract = settings.keys
        self.shards = settings.all_shard_keys
        self.timezone = settings.timezone
        self.expire_at = expire_at_function(settings)
        self._replace = client.register_script(REPLACE_SCRIPT)

    def run_once(self, days: int = 2, now_s: float | None = None) -> PassReport:
        started = time.monotonic()
        labels = labels_of(time.time() if now_s is None else now_s, self.timezone, days)
        boards = [(c, label) for label in labels for c in BOARD_CATEGORIES]
        pipe = self.client.pipeline(transaction=False)
        for category, label in boards:
            for space in self.shards:
                pipe.zcard(space.leaderboard(category, label))
            pipe.exists(self.contract.leaderboard(category, label))
        replies = pipe.execute()
        written = deleted = members = 0
        per_board = len(self.shards) + 1
        for i, (category, label) in enumerate(boards):
            *sizes, exists = replies[i * per_board : (i + 1) * per_board]
            key = self.contract.leaderboard(category, label)
            if any(sizes):
                members += self._write(key, [s.leaderboard(category, label) for s in self.shards])
                written += 1
            elif exists:
                self.client.delete(key)
                deleted += 1
        return PassReport(written, deleted, members, time.monotonic() - started, labels)

    def _write(self, key: str, shard_keys: Sequence[str]) -> int:
        """`key` replaced by the sum of `shard_keys`; the members written."""
        pipe = self.client.pipeline(transaction=False)
        for shard_key in shard_keys:
            pipe.zrange(shard_key, 0, -1, withscores=True)
        board: dict[Any, float] = {}
        for rows in pipe.execute():
            for member, score in rows:
                board[member] = board.get(member, 0.0) + float(score)
        if not board:  # emptied since the count: the next pass deletes the key
            return 0
        staging = KeySpace.staging_key(key, uuid.uuid4().hex[:12])
        items = list(board.items())
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(items), ZADD_CHUNK):
            pipe.zadd(staging, dict(items[start : start + ZADD_CHUNK]))
        pipe.pexpire(staging, STAGING_TTL_MS)
        pipe.execute()
        expiry = self.expire_at(key) if self.expire_at else None
        self._replace(keys=[key, staging], args=["" if expiry is None else expiry])
        return len(board)


def run(
    materializer: Materializer,
    interval_s: float,
    days: int,
    stop: threading.Event,
    report: Callable[[PassReport], None],
) -> None:
    """A pass every `interval_s` (from the start of one to the next) until `stop` is set."""
    while not stop.is_set():
        started = time.monotonic()
        report(materializer.run_once(days))
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))


def materialize_command(
    settings: Settings,
    *,
    once: bool,
    interval_s: float,
    days: int,
    as_json: bool,
    out: TextIO,
    stop: threading.Event | None = None,
) -> int:
    if settings.shards == 1:
        print(
            "pomocore: POMOCORE_SHARDS is 1: the contract's keys are the boards themselves, "
            "there is nothing to materialize",
            file=sys.stderr,
        )
        return 2

    def report(found: PassReport) -> None:
        out.write((json.dumps(asdict(found)) if as_json else found.line()) + "\n")
        out.flush()

    client = sync_redis(settings, timeout_s=CLI_TIMEOUT_S)
    try:
        materializer = Materializer(client, settings)
        if once:
            report(materializer.run_once(days))
        else:
            run(materializer, interval_s, days, stop or threading.Event(), report)
    finally:
        client.close()
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    settings = Settings.from_env(log_format=args.log_format, log_level=args.log_level)
    stop = threading.Event()
    if not args.once:
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    return materialize_command(
        settings,
        once=args.once,
        interval_s=args.interval_s,
        days=args.days,
        as_json=args.json,
        out=sys.stdout,
        stop=stop,
    )


def register(actions: Any) -> None:
    """`pomocore leaderboard materialize` in the `leaderboard` action subparsers."""
    p = actions.add_parser(
        "materialize",
        parents=[logging_parent()],
        help="shards: rebuild the contract's leaderboard keys from the shards, every interval",
    )
    p.add_argument("--once", action="store_true", help="one pass, then exit (default: loop)")
    p.add_argument(
        "--interval-s",
        type=bounded_float(0.1, 86400),
        default=10.0,
        help="seconds from the start of a pass to the next: the keys' staleness bound",
    )
    p.add_argument(
        "--days",
        type=bounded_int(1, 31),
        default=2,
        help="boards of today and the days before it, with their weeks and months",
    )
    add_json(p, "each pass's report")
    p.set_defaults(func=cmd_materialize)
