"""Leaderboard reads over user-partitioned shards (POMOCORE_SHARDS > 1), without I/O.

A user's whole score for a period lives in exactly one shard (core/shards.py), so the
board is the disjoint union of the shards' sorted sets and every read is exact: it
returns what one sorted set holding all the members would return, tie order included.
Redis orders a sorted set by score, then by member bytes; ZREVRANGE and ZREVRANK reverse
both, so among equal scores the member with the greater bytes comes first. Here a row's
place is the pair (score, member), compared the same way (Python compares bytes as
memcmp does, and str by code point, which is the order of their UTF-8 bytes).

    top      each shard's first rows, k-way merged; a shard whose rows ran out before
             the page was certain is asked for more (rarely: the first request covers
             1.5 times its fair share of the page)
    rank     the user's rank and score in its own shard (ZREVRANK, ZSCORE), then in every
             other shard the members above it: ZCOUNT of the higher scores plus the
             members tied at exactly its score whose bytes are greater. Ties come from
             ZREVRANGEBYSCORE s s LIMIT: one page of TIE_PAGE members (two commands per
             shard in all), and only beyond it the tie's size (ZCOUNT s s) and a search
             by probes (TIE_PROBES per round), so a tie of 100k members costs a few
             small round trips, never the 100k members
    around   the user's place in every shard (as rank), then each shard's rows just
             above and below that place, merged
    count    the sum of the shards' ZCARD

Each read is a plan: a generator that yields the commands of one round trip (a list of
`Op`, all shards' commands in one pipeline) and is sent their replies, in order; it
returns the answer. The sync and async readers (shell/reader.py) only run the commands,
so both answer alike. Plans take the shards' keys in shard order. Rounds are not one
snapshot: a board written to between two rounds of one read may be seen half before and
half after the write, as the unsharded `around` (two calls) already is.
"""

from __future__ import annotations

import heapq
from collections.abc import Generator, Iterator, Sequence
from itertools import islice
from typing import Any, Final, TypeVar

T = TypeVar("T")

# One command: (name, key, *arguments). The readers map each name to one redis-py call.
Op = tuple[Any, ...]
Plan = Generator[list[Op], list[Any], T]
Pair = tuple[Any, float]  # (member, score): a row of a ZREVRANGE ... WITHSCORES reply

ZREVRANGE: Final = "zrevrange"  # key, start, stop → [(member, score)] (WITHSCORES)
ZREVRANK: Final = "zrevrank"  # key, member → rank or None
ZSCORE: Final = "zscore"  # key, member → score or None
ZCARD: Final = "zcard"  # key → members
ZCOUNT: Final = "zcount"  # key, min, max (Redis score bounds) → members
TIES: Final = "ties"  # key, score, start, count → [member]: ZREVRANGEBYSCORE s s LIMIT

TIE_PAGE: Final = 128  # tied members fetched at once from one shard
TIE_PROBES: Final = 15  # members probed per shard and round past the first page
FIRST_SLACK: Final = 8  # rows asked of each shard beyond 1.5 times its share of a page


def order(pair: Pair) -> tuple[float, Any]:
    """A row's place: rows sort by score, then member, both descending."""
    return (pair[1], pair[0])


def merge(replies: Sequence[Sequence[Pair]]) -> Iterator[Pair]:
    """The rows of several ZREVRANGE ... WITHSCORES replies (each in Redis order, members
    all bytes or all str) in the order one sorted set holding them all gives."""
    return heapq.merge(*replies, key=order, reverse=True)


def _like(user: str, member: Any) -> Any:
    """`user` as the type of the client's members (bytes unless it decodes replies)."""
    return user.encode("utf-8", "surrogatepass") if type(member) is bytes else user


def _greater(member: Any, user: str) -> bool:
    """Whether `member` comes before `user` among equal scores (its bytes are greater)."""
    return bool(member > _like(user, member))


def _bound(score: float) -> str:
    """A score as a Redis bound: repr() round-trips a float exactly (so does strtod)."""
    return repr(score)


def gather(plans: Sequence[Plan[T]]) -> Plan[list[T]]:
    """Several plans run side by side: each round trip carries the commands every plan
    still running asks for; the answers in the plans' order."""
    results: list[Any] = [None] * len(plans)
    asking: dict[int, list[Op]] = {}
    for i, plan in enumerate(plans):
        try:
            asking[i] = next(plan)
        except StopIteration as done:
            results[i] = done.value
    while asking:
        replies = yield [op for ops in asking.values() for op in ops]
        at, following = 0, {}
        for i, ops in asking.items():
            part, at = replies[at : at + len(ops)], at + len(ops)
            try:
                following[i] = plans[i].send(part)
            except StopIteration as done:
                results[i] = done.value
        asking = following
    return results


def count(keys: Sequence[str]) -> Plan[int]:
    """Members of the board: the sum over the shards."""
    replies = yield [(ZCARD, key) for key in keys]
    return sum(int(r) for r in replies)


def top(keys: Sequence[str], offset: int, limit: int) -> Plan[list[Pair]]:
    """Rows offset .. offset + limit - 1 (0-based) of the board.

    A shard holds its fair share of a page (1/N) give or take a few rows, as a user's
    shard is a hash of its id: each shard is first asked for 1.5 times its share plus
    FIRST_SLACK rows (all of a top-10 on up to 6 shards: one round trip, as without
    shards). A shard that answered in full and whose last row is still above the page's
    last row may hide rows of the page; it is asked for twice as many, until none does.
    """
    depth = offset + limit
    first = min(depth, -(-3 * depth // (2 * len(keys))) + FIRST_SLACK)
    asked = [first] * len(keys)
    got = [list(r) for r in (yield [(ZREVRANGE, key, 0, first - 1) for key in keys])]
    full = [len(r) == first for r in got]
    while True:
        merged = list(islice(merge(got), depth))
        short = _short(got, full, asked, depth, merged)
        if not short:
            return merged[offset:]
        starts = [asked[i] for i in short]
        for i in short:
            asked[i] = min(depth, 2 * asked[i])
        pages = zip(short, starts, strict=True)
        replies = yield [(ZREVRANGE, keys[i], start, asked[i] - 1) for i, start in pages]
        for i, start, reply in zip(short, starts, replies, strict=True):
            full[i] = len(reply) == asked[i] - start
            seen = {member for member, _ in got[i]}  # a row moved up meanwhile: once
            got[i].extend(row for row in reply if row[0] not in seen)
            got[i].sort(key=order, reverse=True)


def _short(
    got: list[list[Pair]], full: list[bool], asked: list[int], depth: int, merged: list[Pair]
) -> list[int]:
    """The shards that may hold rows of the first `depth` they have not sent: those that
    answered in full, below `depth` rows, with a last row above the depth-th row merged
    (their next rows are below their last one, and the other shards' below the depth-th)."""
    may_have_more = [i for i, f in enumerate(full) if f and asked[i] < depth]
    if len(merged) < depth:
        return may_have_more
    last = order(merged[-1])
    return [i for i in may_have_more if not got[i] or order(got[i][-1]) > last]


def places(keys: Sequence[str], own: int, user: str) -> Plan[tuple[float, list[int]] | None]:
    """The user's score and, per shard, how many of its members rank above the user (in
    its own shard: the user's rank there); None when the user is not on the board."""
    rank, score = yield [(ZREVRANK, keys[own], user), (ZSCORE, keys[own], user)]
    if rank is None or score is None:
        return None
    score = float(score)
    above = [0] * len(keys)
    above[own] = int(rank)
    others = [j for j in range(len(keys)) if j != own]
    if others:
        counts = yield from gather([_above(keys[j], score, user) for j in others])
        for j, n in zip(others, counts, strict=True):
            above[j] = n
    return score, above


def _above(key: str, score: float, user: str) -> Plan[int]:
    """Members of one shard (not the user's) above the user: every higher score, and the
    members tied at exactly `score` whose bytes are greater. The tied members come in
    descending bytes, so those above the user are a prefix of them: its length is found
    from one page, or by probes narrowing it down, then one page."""
    s = _bound(score)
    higher, page = yield [(ZCOUNT, key, f"({s}", "+inf"), (TIES, key, s, 0, TIE_PAGE)]
    before = sum(1 for m in page if _greater(m, user))
    if before < len(page) or len(page) < TIE_PAGE:  # the page ends the prefix, or the tie
        return int(higher) + before
    # Tied members 0 .. lo - 1 are above the user, lo .. hi - 1 unknown.
    (tied,) = yield [(ZCOUNT, key, s, s)]
    lo, hi = before, int(tied)
    while lo < hi:
        if hi - lo <= TIE_PAGE:
            (page,) = yield [(TIES, key, s, lo, hi - lo)]
            return int(higher) + lo + sum(1 for m in page if _greater(m, user))
        probes = [lo + (hi - lo) * k // (TIE_PROBES + 1) for k in range(1, TIE_PROBES + 1)]
        found = yield [(TIES, key, s, i, 1) for i in probes]
        for i, members in zip(probes, found, strict=True):
            if members and _greater(members[0], user):
                lo = i + 1
            else:  # below the user (or gone meanwhile): the prefix ends before it
                hi = i
                break
    return int(higher) + lo


def rank(keys: Sequence[str], own: int, user: str) -> Plan[tuple[int, float] | None]:
    """The user's 0-based rank on the board and its score; None when not on it."""
    found = yield from places(keys, own, user)
    if found is None:
        return None
    score, above = found
    return sum(above), score


def ranks(
    keys: Sequence[str], users: Sequence[tuple[int, str]]
) -> Plan[list[tuple[int, float] | None]]:
    """`rank` of several (own shard, user), in the same round trips."""
    return (yield from gather([rank(keys, own, user) for own, user in users]))


def around(keys: Sequence[str], own: int, user: str, n: int) -> Plan[tuple[int, list[Pair]]]:
    """The user's row with up to `n` rows above and `n` below, and the 0-based rank of
    the first of them; (0, []) when the user is not on the board. The rows just above
    and below the user are each shard's rows just above and below its place there."""
    found = yield from places(keys, own, user)
    if found is None:
        return 0, []
    score, above = found
    rank = sum(above)
    if n == 0:
        return rank, [(user, score)]
    windows = yield [
        # the user's own shard holds the user at its place; the others the next member
        (ZREVRANGE, key, max(0, place - n), place + n - (0 if j == own else 1))
        for j, (key, place) in enumerate(zip(keys, above, strict=True))
    ]
    rows = list(merge(windows))
    mine = [i for i, (member, _) in enumerate(rows) if member == _like(user, member)]
    if not mine:  # removed between the round trips
        return 0, []
    at = mine[0]
    first = max(0, at - n)
    return rank - (at - first), rows[first : at + n + 1]
