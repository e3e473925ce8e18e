"""Reading the leaderboards (CONTRACT §4): top N, a user's rank, the users around them,
the ranks of many users, the member count.

    with LeaderboardReader.from_settings(settings) as reader:
        reader.top("Development", "weekly", "2026-02-12", limit=10)   # [Row(rank=1, ...), ...]
        reader.rank("u42", "work", "daily")                           # Row or None (today)
        reader.around("u42", "work", "daily", n=2)                    # 2 above, u42, 2 below
        reader.ranks(["u1", "u2"], "work", "monthly")                 # {"u1": Row, "u2": None}
        reader.count("work", "daily")                                 # members

    async with AsyncLeaderboardReader.from_settings(settings) as reader:
        await reader.top("work", "daily")

`date` is a local date (`YYYY-MM-DD`, a `datetime.date`, or None for today in the
leaderboard time zone); the period's label is derived from it, so `weekly` + `2026-02-12`
reads `leaderboard:{category}:2026-W7`. Ranks are 1-based, highest score first; equal
scores are ordered as Redis orders them (member, descending).

Round trips: `top`, `rank` and `count` one each; `ranks` one pipeline; `around` two (the
user's rank, then the window; it is the window as it is at the second call). `rank` uses
`ZREVRANK ... WITHSCORE` where the server has it (Redis >= 7.2, Valkey), found out on the
first call and remembered; elsewhere a pipeline of ZREVRANK and ZSCORE (one round trip
too). Readers only issue ZREVRANGE, ZREVRANK, ZSCORE and ZCARD (over shards also ZCOUNT
and ZREVRANGEBYSCORE): the `reader` ACL user (pomocore.acl) is enough. Bad arguments
raise QueryError; a failed Redis call raises BackendError (BackendUnavailable when
retrying later may work). A reader owns the client it is given: `close()` (or leaving
the `with` block) closes it.

Shards (`POMOCORE_SHARDS` > 1, `shards=` here; `from_settings` reads it): every query
answers what one sorted set holding every shard's members would answer, ties in Redis'
order included (core/shard_reads.py merges the shards; a user lives in one shard). Each
round trip is one pipeline over the shards (never a transaction: on a Cluster they sit on
different nodes): `top` and `count` one (a `top` deeper than about 1.5 times a shard's
share of it, rarely, more), `rank` and `ranks` two (the user's own shard, then the
others; ties at the user's score larger than 128 members in a shard add a few), `around`
three. `top` over shards takes offset + limit <= MAX_SHARDED_DEPTH.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import date
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, TypeVar, get_args

import redis
import redis.asyncio as aioredis

from pomocore.core import shard_reads
from pomocore.core.connect import async_redis, sync_redis
from pomocore.core.errors import PomocoreError
from pomocore.core.keys import KeySpace
from pomocore.core.periods import BUCKET_S, PeriodCalculator, Periods, periods_of_datetime
from pomocore.core.redis_errors import backend_error, server_name
from pomocore.core.settings import Settings
from pomocore.core.shard_reads import Op, Plan
from pomocore.core.shards import MAX_SHARDS, shard_of, shard_tag

T = TypeVar("T")

Period = Literal["daily", "weekly", "monthly"]
PERIODS: Final[tuple[Period, ...]] = get_args(Period)
MAX_LIMIT: Final = 1000  # rows of one `top`
MAX_OFFSET: Final = 1_000_000_000  # rows skipped by `top` (Redis takes a 64-bit index)
# offset + limit of a `top` over shards: each shard's rows down to that depth are merged
# in Python, ~1.5 times `depth` rows in all (core/shard_reads.py).
MAX_SHARDED_DEPTH: Final = 10_000
MAX_AROUND: Final = 50  # rows above and below the user in `around`
MAX_USERS: Final = 100  # users of one `ranks` call
MAX_CATEGORY_CHARS: Final = 64
MAX_USER_CHARS: Final = 128  # pomocore.core.events.MAX_USER_ID_CHARS
READ_TIMEOUT_S: Final = 5.0  # socket timeout of the readers built by from_settings
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_MEMO_SIZE: Final = 4096
# redis-py wraps socket errors in its own; OSError covers what slips through (TLS).
_REDIS_ERRORS: Final = (redis.RedisError, OSError)


class QueryError(PomocoreError, ValueError):
    """A bad reader query (unknown period, bad date, limit out of range...)."""


class Row(NamedTuple):
    """One row of a board: 1-based rank, user id, score (seconds). Immutable; a tuple, so
    `rank, user, score = row` works. A NamedTuple rather than a frozen dataclass: built in
    half the time, which is most of what the reader adds to a top-10 (see `_rows`)."""

    rank: int
    user: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "user": self.user, "score": self.score}


_new_row = tuple.__new__  # Row's own __new__ is a Python function; its rows are tuples


class LeaderboardKeys:
    """Query → key, with validation shared by the sync and async readers.

    Today's labels are kept per 15-minute bucket of the clock (core/periods.py), other
    labels per (period, date as given), keys per (category, label), each memo bounded: a
    key costs a few dict look-ups (~0.5 µs), not a calendar computation, on the hot path.

    With `shards` > 1, `key` is the board's contract name (what `pomocore leaderboard
    materialize` writes) and `shard_keys` the keys the reads merge, in shard order.
    """

    def __init__(self, keys: KeySpace, timezone: str, shards: int = 1) -> None:
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, got {shards}")
        self.keys = keys
        self.shards = shards
        # Settings.shard_keys, for a reader built without Settings
        self._spaces = tuple(keys.for_shard(shard_tag(i, shards)) for i in range(shards))
        self._calendar = PeriodCalculator(timezone)
        self.tz = self._calendar.tz
        self._now: tuple[int, Periods] = (-1, Periods("", "", ""))  # (bucket, its periods)
        self._labels: dict[tuple[str, date | str], str] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._shard_keys: dict[tuple[str, str], tuple[str, ...]] = {}

    def label(self, period: str, day: date | str | None = None) -> str:
        if day is None:
            bucket, periods = self._now  # one tuple: threads never see half of an update
            if bucket != (now := int(time.time() // BUCKET_S)):
                periods = self._calendar(now * BUCKET_S)
                self._now = (now, periods)
            return _pick(periods, period)
        label = self._labels.get((period, day))
        if label is None:
            label = _pick(periods_of_datetime(_parse_day(day)), period)
            _remember(self._labels, (period, day), label)
        return label

    def key(self, category: str, period: str, day: date | str | None = None) -> str:
        label = self.label(period, day)
        key = self._keys.get((category, label))
        if key is None:
            if not category or len(category) > MAX_CATEGORY_CHARS:
                raise QueryError(f"category must be 1-{MAX_CATEGORY_CHARS} characters")
            key = self.keys.leaderboard(category, label)
            _remember(self._keys, (category, label), key)
        return key

    def shard_keys(
        self, category: str, period: str, day: date | str | None = None
    ) -> tuple[str, ...]:
        """The board's key in each shard, in shard order."""
        label = self.label(period, day)
        keys = self._shard_keys.get((category, label))
        if keys is None:
            self.key(category, period, day)  # validates the category
            keys = tuple(space.leaderboard(category, label) for space in self._spaces)
            _remember(self._shard_keys, (category, label), keys)
        return keys


def _remember(memo: dict[Any, Any], name: Any, value: Any) -> None:
    if len(memo) >= _MEMO_SIZE:  # bounded: a caller sending ever new dates or categories
        memo.clear()
    memo[name] = value


def _pick(periods: Periods, period: str) -> str:
    if period == "daily":
        return periods.daily
    if period == "weekly":
        return periods.weekly
    if period == "monthly":
        return periods.monthly
    raise QueryError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")


def _parse_day(day: date | str) -> date:
    if isinstance(day, date):
        return day
    if not isinstance(day, str) or not _DATE.fullmatch(day):
        raise QueryError(f"date must be YYYY-MM-DD, got {day!r}")
    try:
        return date.fromisoformat(day)
    except ValueError as exc:
        raise QueryError(f"invalid date {day!r}") from exc


def check_limit(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")


def check_user(user: str) -> None:
    if not user or len(user) > MAX_USER_CHARS:
        raise QueryError(f"user must be 1-{MAX_USER_CHARS} characters")


def check_depth(limit: int, offset: int) -> None:
    if offset + limit > MAX_SHARDED_DEPTH:
        raise QueryError(
            f"offset + limit must be at most {MAX_SHARDED_DEPTH} over shards "
            f"(POMOCORE_SHARDS > 1), got {offset + limit}"
        )


def check_around(n: int) -> None:
    if not 0 <= n <= MAX_AROUND:
        raise QueryError(f"n must be between 0 and {MAX_AROUND}, got {n}")


def check_users(users: Sequence[str]) -> list[str]:
    """The distinct users, in order; 1 to MAX_USERS of them."""
    if isinstance(users, str):
        raise QueryError("users must be a list of user ids, not one string")
    distinct = list(dict.fromkeys(users))
    if not 1 <= len(distinct) <= MAX_USERS:
        raise QueryError(f"give 1 to {MAX_USERS} users, got {len(distinct)}")
    for user in distinct:
        check_user(user)
    return distinct


def _rows(reply: Any, offset: int) -> list[Row]:
    """Rows of a ZREVRANGE ... WITHSCORES reply whose first row has rank offset + 1.

    redis-py has made the scores floats already (its score_cast_func); the hot loop only
    decodes members and builds tuples: ~1.8 µs for 10 rows, against ~3.5 µs with a
    float() per score and ~4.5 µs with frozen-dataclass rows (benchmarks/reader.py).
    """
    if reply and type(reply[0][0]) is bytes:
        return [
            _new_row(Row, (rank, m.decode("utf-8", "replace"), s))
            for rank, (m, s) in enumerate(reply, offset + 1)
        ]
    return [_new_row(Row, (rank, m, s)) for rank, (m, s) in enumerate(reply, offset + 1)]


def _ranked(user: str, rank: Any, score: Any) -> Row | None:
    if rank is None or score is None:
        return None
    return _new_row(Row, (int(rank) + 1, user, float(score)))


def _with_score(user: str, reply: Any) -> Row | None:
    """A `ZREVRANK ... WITHSCORE` reply: [rank, score], or None when not a member."""
    if reply is None:
        return None
    return _new_row(Row, (int(reply[0]) + 1, user, float(reply[1])))


def _queue(pipe: Any, op: Op) -> None:
    """One command of a plan (core/shard_reads.py) into a pipeline, sync or async."""
    name, key, *args = op
    if name == shard_reads.ZREVRANGE:
        pipe.zrevrange(key, args[0], args[1], withscores=True)
    elif name == shard_reads.TIES:
        score, start, num = args
        pipe.zrevrangebyscore(key, score, score, start=start, num=num)
    elif name == shard_reads.ZCOUNT:
        pipe.zcount(key, args[0], args[1])
    elif name == shard_reads.ZREVRANK:
        pipe.zrevrank(key, args[0])
    elif name == shard_reads.ZSCORE:
        pipe.zscore(key, args[0])
    elif name == shard_reads.ZCARD:
        pipe.zcard(key)
    else:
        raise AssertionError(f"unknown command {name!r}")


class ShardedQueries:
    """The reads over shards as plans (core/shard_reads.py) answering Rows, for the sync
    and the async reader alike: each runs a plan's round trips, nothing else. Arguments
    are checked by the reader first."""

    def __init__(self, naming: LeaderboardKeys) -> None:
        self.naming = naming
        self.shards = naming.shards

    def top(
        self, category: str, period: str, day: date | str | None, limit: int, offset: int
    ) -> Plan[list[Row]]:
        check_depth(limit, offset)
        keys = self.naming.shard_keys(category, period, day)
        return _as_rows(shard_reads.top(keys, offset, limit), offset)

    def rank(
        self, user: str, category: str, period: str, day: date | str | None
    ) -> Plan[Row | None]:
        keys = self.naming.shard_keys(category, period, day)
        return _as_row(user, shard_reads.rank(keys, shard_of(user, self.shards), user))

    def ranks(
        self, users: list[str], category: str, period: str, day: date | str | None
    ) -> Plan[dict[str, Row | None]]:
        keys = self.naming.shard_keys(category, period, day)
        owned = [(shard_of(u, self.shards), u) for u in users]
        return _as_ranks(users, shard_reads.ranks(keys, owned))

    def around(
        self, user: str, category: str, period: str, day: date | str | None, n: int
    ) -> Plan[list[Row]]:
        keys = self.naming.shard_keys(category, period, day)
        return _as_window(shard_reads.around(keys, shard_of(user, self.shards), user, n))

    def count(self, category: str, period: str, day: date | str | None) -> Plan[int]:
        return shard_reads.count(self.naming.shard_keys(category, period, day))


def _as_rows(plan: Plan[list[shard_reads.Pair]], offset: int) -> Plan[list[Row]]:
    return _rows((yield from plan), offset)


def _as_row(user: str, plan: Plan[tuple[int, float] | None]) -> Plan[Row | None]:
    found = yield from plan
    return None if found is None else _ranked(user, *found)


def _as_ranks(
    users: list[str], plan: Plan[list[tuple[int, float] | None]]
) -> Plan[dict[str, Row | None]]:
    found = yield from plan
    return {u: None if f is None else _ranked(u, *f) for u, f in zip(users, found, strict=True)}


def _as_window(plan: Plan[tuple[int, list[shard_reads.Pair]]]) -> Plan[list[Row]]:
    start, pairs = yield from plan
    return _rows(pairs, start)


def _lacks_withscore(exc: redis.ResponseError) -> bool:
    """The server has no WITHSCORE option (Redis < 7.2: "wrong number of arguments")."""
    message = str(exc).lower()
    return "wrong number of arguments" in message or "syntax error" in message


class LeaderboardReader:
    """Blocking reader (CLI, HTTP endpoint, scripts). Safe to share between threads."""

    def __init__(
        self,
        redis: Any,
        keys: KeySpace | None = None,
        timezone: str = "Asia/Seoul",
        shards: int = 1,
    ) -> None:
        self.redis = redis
        self.naming = LeaderboardKeys(keys or KeySpace(), timezone, shards)
        self._server = server_name(redis)
        # Whether the server takes ZREVRANK ... WITHSCORE: None until the first rank.
        self._withscore: bool | None = None
        # Over shards, the reads run plans; without, the code below (one command each).
        self._sharded = ShardedQueries(self.naming) if shards > 1 else None

    @classmethod
    def from_settings(cls, settings: Settings) -> LeaderboardReader:
        client = sync_redis(settings, timeout_s=READ_TIMEOUT_S)
        return cls(client, settings.keys, settings.timezone, settings.shards)

    def __enter__(self) -> LeaderboardReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def key(self, category: str, period: Period | str, day: date | str | None = None) -> str:
        return self.naming.key(category, period, day)

    def top(
        self,
        category: str,
        period: Period,
        day: date | str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Row]:
        check_limit(limit, offset)
        if self._sharded:
            return self._run(self._sharded.top(category, period, day, limit, offset))
        key = self.naming.key(category, period, day)
        try:
            reply = self.redis.zrevrange(key, offset, offset + limit - 1, withscores=True)
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        return _rows(reply, offset)

    def rank(
        self, user: str, category: str, period: Period, day: date | str | None = None
    ) -> Row | None:
        check_user(user)
        if self._sharded:
            return self._run(self._sharded.rank(user, category, period, day))
        key = self.naming.key(category, period, day)
        try:
            if self._withscore is not False:
                try:
                    reply = self.redis.zrevrank(key, user, withscore=True)
                except redis.ResponseError as exc:
                    if self._withscore or not _lacks_withscore(exc):
                        raise
                    self._withscore = False
                else:
                    self._withscore = True
                    return _with_score(user, reply)
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrevrank(key, user)
            pipe.zscore(key, user)
            rank, score = pipe.execute()
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        return _ranked(user, rank, score)

    def ranks(
        self, users: Sequence[str], category: str, period: Period, day: date | str | None = None
    ) -> dict[str, Row | None]:
        """The rank of each distinct user (None: not on the board), in one pipeline."""
        distinct = check_users(users)
        if self._sharded:
            return self._run(self._sharded.ranks(distinct, category, period, day))
        key = self.naming.key(category, period, day)
        if self._withscore is None:  # find out once, with the first user's own query
            first = {distinct[0]: self.rank(distinct[0], category, period, day)}
            if len(distinct) == 1:
                return first
        try:
            pipe = self.redis.pipeline(transaction=False)
            for user in distinct:
                if self._withscore:
                    pipe.zrevrank(key, user, withscore=True)
                else:
                    pipe.zrevrank(key, user)
                    pipe.zscore(key, user)
            replies = pipe.execute()
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        if self._withscore:
            return {u: _with_score(u, r) for u, r in zip(distinct, replies, strict=True)}
        pairs = zip(replies[0::2], replies[1::2], strict=True)
        return {u: _ranked(u, r, s) for u, (r, s) in zip(distinct, pairs, strict=True)}

    def around(
        self, user: str, category: str, period: Period, day: date | str | None = None, n: int = 5
    ) -> list[Row]:
        """The user's row with up to `n` rows above and `n` below; [] when not on the board."""
        check_user(user)
        check_around(n)
        if self._sharded:
            return self._run(self._sharded.around(user, category, period, day, n))
        key = self.naming.key(category, period, day)
        try:
            rank = self.redis.zrevrank(key, user)
            if rank is None:
                return []
            start = max(0, int(rank) - n)
            reply = self.redis.zrevrange(key, start, int(rank) + n, withscores=True)
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        return _rows(reply, start)

    def count(self, category: str, period: Period, day: date | str | None = None) -> int:
        """Members of the board (users with a score)."""
        if self._sharded:
            return self._run(self._sharded.count(category, period, day))
        key = self.naming.key(category, period, day)
        try:
            return int(self.redis.zcard(key))
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc

    def _run(self, plan: Plan[T]) -> T:
        """A plan's round trips, one pipeline each (non-transactional: on a Cluster the
        shards' keys live on different nodes)."""
        try:
            ops = next(plan)
            while True:
                pipe = self.redis.pipeline(transaction=False)
                for op in ops:
                    _queue(pipe, op)
                ops = plan.send(pipe.execute())
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc

    def close(self) -> None:
        self.redis.close()


class AsyncLeaderboardReader:
    """The same queries for asyncio services. Safe to share between tasks."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace | None = None,
        timezone: str = "Asia/Seoul",
        shards: int = 1,
    ) -> None:
        self.redis = redis
        self.naming = LeaderboardKeys(keys or KeySpace(), timezone, shards)
        self._server = server_name(redis)
        self._withscore: bool | None = None
        self._sharded = ShardedQueries(self.naming) if shards > 1 else None

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncLeaderboardReader:
        client = async_redis(
            settings, socket_timeout=READ_TIMEOUT_S, socket_connect_timeout=READ_TIMEOUT_S
        )
        return cls(client, settings.keys, settings.timezone, settings.shards)

    async def __aenter__(self) -> AsyncLeaderboardReader:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def key(self, category: str, period: Period | str, day: date | str | None = None) -> str:
        return self.naming.key(category, period, day)

    async def top(
        self,
        category: str,
        period: Period,
        day: date | str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Row]:
        check_limit(limit, offset)
        if self._sharded:
            return await self._run(self._sharded.top(category, period, day, limit, offset))
        key = self.naming.key(category, period, day)
        try:
            reply = await self.redis.zrevrange(key, offset, offset + limit - 1, withscores=True)
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        return _rows(reply, offset)

    async def rank(
        self, user: str, category: str, period: Period, day: date | str | None = None
    ) -> Row | None:
        check_user(user)
        if self._sharded:
            return await self._run(self._sharded.rank(user, category, period, day))
        key = self.naming.key(category, period, day)
        try:
            if self._withscore is not False:
                try:
                    reply: Any = await self.redis.zrevrank(key, user, withscore=True)
                except redis.ResponseError as exc:
                    if self._withscore or not _lacks_withscore(exc):
                        raise
                    self._withscore = False
                else:
                    self._withscore = True
                    return _with_score(user, reply)
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrevrank(key, user)
            pipe.zscore(key, user)
            rank, score = await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        return _ranked(user, rank, score)

    async def ranks(
        self, users: Sequence[str], category: str, period: Period, day: date | str | None = None
    ) -> dict[str, Row | None]:
        """The rank of each distinct user (None: not on the board), in one pipeline."""
        distinct = check_users(users)
        if self._sharded:
            return await self._run(self._sharded.ranks(distinct, category, period, day))
        key = self.naming.key(category, period, day)
        if self._withscore is None:
            first = {distinct[0]: await self.rank(distinct[0], category, period, day)}
            if len(distinct) == 1:
                return first
        try:
            pipe = self.redis.pipeline(transaction=False)
            for user in distinct:
                if self._withscore:
                    pipe.zrevrank(key, user, withscore=True)
                else:
                    pipe.zrevrank(key, user)
                    pipe.zscore(key, user)
            replies = await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        if self._withscore:
            return {u: _with_score(u, r) for u, r in zip(distinct, replies, strict=True)}
        pairs = zip(replies[0::2], replies[1::2], strict=True)
        return {u: _ranked(u, r, s) for u, (r, s) in zip(distinct, pairs, strict=True)}

    async def around(
        self, user: str, category: str, period: Period, day: date | str | None = None, n: int = 5
    ) -> list[Row]:
        """The user's row with up to `n` rows above and `n` below; [] when not on the board."""
        check_user(user)
        check_around(n)
        if self._sharded:
            return await self._run(self._sharded.around(user, category, period, day, n))
        key = self.naming.key(category, period, day)
        try:
            rank: Any = await self.redis.zrevrank(key, user)
            if rank is None:
                return []
            start = max(0, int(rank) - n)
            reply = await self.redis.zrevrange(key, start, int(rank) + n, withscores=True)
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc
        return _rows(reply, start)

    async def count(self, category: str, period: Period, day: date | str | None = None) -> int:
        """Members of the board (users with a score)."""
        if self._sharded:
            return await self._run(self._sharded.count(category, period, day))
        key = self.naming.key(category, period, day)
        try:
            return int(await self.redis.zcard(key))
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc

    async def _run(self, plan: Plan[T]) -> T:
        """LeaderboardReader._run, awaiting each round trip."""
        try:
            ops = next(plan)
            while True:
                pipe = self.redis.pipeline(transaction=False)
                for op in ops:
                    _queue(pipe, op)
                ops = plan.send(await pipe.execute())
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except _REDIS_ERRORS as exc:
            raise backend_error(exc, self._server) from exc

    async def close(self) -> None:
        await self.redis.aclose()
