"""The reads over shards (pomocore.core.shard_reads) against one sorted set, in Python:
members split over shards by shard_of answer top, rank, ranks, around and count exactly
as one sorted set holding them all, ordered by score then member bytes, both descending
(the order of ZREVRANGE and ZREVRANK), tie order included. The plans run against a
model of the few sorted-set commands they issue; tests/ops/test_shard_reader.py runs
them against real servers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from pomocore.core import shard_reads
from pomocore.core.shard_reads import Op, Plan, T
from pomocore.core.shards import shard_of

Board = dict[bytes, float]


def descending(board: Board) -> list[tuple[bytes, float]]:
    """One sorted set in ZREVRANGE order."""
    return sorted(board.items(), key=lambda p: (p[1], p[0]), reverse=True)


def _bound(text: str) -> tuple[float, bool]:
    """A Redis score bound: (value, exclusive)."""
    if text.startswith("("):
        return float(text[1:]), True
    return float(text), False


class Model:
    """The sorted-set commands of the plans, on Python dicts; counts round trips."""

    def __init__(self, boards: dict[str, Board]) -> None:
        self.boards = boards
        self.round_trips = 0
        self.commands = 0

    def answer(self, op: Op) -> Any:
        name, key, *args = op
        rows = descending(self.boards.get(key, {}))
        if name == shard_reads.ZREVRANGE:
            start, stop = args
            return rows[start : stop + 1]
        if name == shard_reads.ZREVRANK:
            member = args[0].encode()
            return next((i for i, (m, _) in enumerate(rows) if m == member), None)
        if name == shard_reads.ZSCORE:
            return self.boards.get(key, {}).get(args[0].encode())
        if name == shard_reads.ZCARD:
            return len(rows)
        if name == shard_reads.ZCOUNT:
            (lo, lo_open), (hi, hi_open) = _bound(args[0]), _bound(args[1])
            return sum(
                1 for _, s in rows
                if (s > lo if lo_open else s >= lo) and (s < hi if hi_open else s <= hi)
            )  # fmt: skip
        if name == shard_reads.TIES:
            score, start, num = float(args[0]), args[1], args[2]
            return [m for m, s in rows if s == score][start : start + num]
        raise AssertionError(f"unexpected command {op}")

    def run(self, plan: Plan[T]) -> T:
        try:
            ops = next(plan)
            while True:
                assert ops, "a plan asked for a round trip without commands"
                self.round_trips += 1
                self.commands += len(ops)
                ops = plan.send([self.answer(op) for op in ops])
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def split(board: Board, shards: int) -> tuple[list[str], Model]:
    """The board cut by shard_of into `shards` keys."""
    keys = [f"{{s{i}}}lb" for i in range(shards)]
    boards: dict[str, Board] = {k: {} for k in keys}
    for member, score in board.items():
        boards[keys[shard_of(member.decode(), shards)]][member] = score
    return keys, Model(boards)


def expected_rank(board: Board, user: str) -> tuple[int, float] | None:
    rows = descending(board)
    member = user.encode()
    return next(((i, s) for i, (m, s) in enumerate(rows) if m == member), None)


def expected_around(board: Board, user: str, n: int) -> tuple[int, list[tuple[bytes, float]]]:
    found = expected_rank(board, user)
    if found is None:
        return 0, []
    rows, at = descending(board), found[0]
    return max(0, at - n), rows[max(0, at - n) : at + n + 1]


def around_rows(
    found: tuple[int, list[tuple[Any, float]]],
) -> tuple[int, list[tuple[bytes, float]]]:
    """`around` with the user's own row (a str member when n = 0) as bytes."""
    start, rows = found
    return start, [(m.encode() if isinstance(m, str) else m, s) for m, s in rows]


@contextmanager
def small_pages(page: int, probes: int) -> Iterator[None]:
    """Tie pages and probes small enough for small boards to need the search."""
    with (
        mock.patch.object(shard_reads, "TIE_PAGE", page),
        mock.patch.object(shard_reads, "TIE_PROBES", probes),
    ):
        yield


# Few letters and scores: many equal scores, members sharing prefixes, non-ASCII bytes.
users = st.text(alphabet="abAB\u00e9\ud55c", min_size=1, max_size=4)
scores = st.sampled_from([0.0, 1.0, 1.5, 25.0, 1500.0, 1e300])
boards = st.dictionaries(users, scores, max_size=60).map(
    lambda d: {u.encode(): s for u, s in d.items()}
)


@settings(max_examples=300, deadline=None)
@given(boards, st.integers(1, 7), st.integers(0, 70), st.integers(1, 40))
def test_top_is_the_one_set_s_page(board: Board, shards: int, offset: int, limit: int) -> None:
    keys, model = split(board, shards)
    found = model.run(shard_reads.top(keys, offset, limit))
    assert found == descending(board)[offset : offset + limit]


@settings(max_examples=300, deadline=None)
@given(
    boards, st.integers(1, 7), users, st.integers(0, 8), st.integers(1, 4), st.integers(1, 4)
)
def test_rank_and_around_are_the_one_set_s(
    board: Board, shards: int, absent: str, n: int, page: int, probes: int
) -> None:
    keys, model = split(board, shards)
    people = [*(m.decode() for m in list(board)[:6]), absent]
    with small_pages(page, probes):
        for user in people:
            own = shard_of(user, shards)
            assert model.run(shard_reads.rank(keys, own, user)) == expected_rank(board, user)
            found = model.run(shard_reads.around(keys, own, user, n))
            assert around_rows(found) == expected_around(board, user, n)
        asked = [(shard_of(u, shards), u) for u in people]
        assert model.run(shard_reads.ranks(keys, asked)) == [
            expected_rank(board, u) for u in people
        ]
    assert model.run(shard_reads.count(keys)) == len(board)


def test_str_members_order_as_their_bytes() -> None:
    """A client that decodes replies (str members) gets the same order: code points order
    as UTF-8 bytes."""
    rows = [[("\ud55c", 5.0), ("z", 5.0)], [("\u00e9", 5.0), ("a", 5.0)]]
    merged = [m for m, _ in shard_reads.merge(rows)]
    assert merged == sorted(merged, key=lambda m: m.encode(), reverse=True)


def test_a_large_tie_costs_a_few_small_round_trips() -> None:
    """5000 members at one score over 4 shards: a rank reads O(log) members per shard,
    not the tie."""
    board = {f"user-{i:05d}".encode(): 1500.0 for i in range(5000)}
    board[b"top"] = 9999.0
    keys, model = split(board, 4)
    for user in ("user-00000", "user-02500", "user-04999", "top"):
        model.round_trips = model.commands = 0
        own = shard_of(user, 4)
        assert model.run(shard_reads.rank(keys, own, user)) == expected_rank(board, user)
        assert model.round_trips <= 5
        assert model.commands <= 2 + 3 * (2 + 1 + shard_reads.TIE_PROBES + 1)
        assert around_rows(model.run(shard_reads.around(keys, own, user, 3))) == (
            expected_around(board, user, 3)
        )


def test_round_trips_of_the_common_reads() -> None:
    """A top-10 is one round trip on up to 6 shards (each asked for its 10 rows); a rank
    two (its own shard, then the others); around three; count one."""
    board = {f"u{i}".encode(): float(i) for i in range(1000)}
    keys, model = split(board, 6)
    assert model.run(shard_reads.top(keys, 0, 10)) == descending(board)[:10]
    assert (model.round_trips, model.commands) == (1, 6)
    model.round_trips = 0
    model.run(shard_reads.rank(keys, shard_of("u500", 6), "u500"))
    assert model.round_trips == 2
    model.round_trips = 0
    model.run(shard_reads.around(keys, shard_of("u500", 6), "u500", 5))
    assert model.round_trips == 3
    model.round_trips = 0
    assert model.run(shard_reads.rank(keys, shard_of("nobody", 6), "nobody")) is None
    assert model.round_trips == 1


def test_a_skewed_board_asks_the_shard_holding_the_page_again() -> None:
    """All of the top 100 in one shard: that shard is asked for more until the page is
    certain, the others not."""
    shards = 4
    heavy = [f"h{i}" for i in range(2000) if shard_of(f"h{i}", shards) == 0][:150]
    board = {u.encode(): 1000.0 + i for i, u in enumerate(heavy)}
    board.update({f"l{i}".encode(): float(i) for i in range(300)})
    keys, model = split(board, shards)
    assert model.run(shard_reads.top(keys, 50, 50)) == descending(board)[50:100]
    assert model.round_trips > 1


def test_gather_answers_in_order_with_plans_done_at_once() -> None:
    def done(value: int) -> Plan[int]:
        return value
        yield []  # a generator that asks for nothing

    keys, model = split({b"a": 1.0}, 2)
    found = model.run(shard_reads.gather([done(7), shard_reads.count(keys), done(9)]))
    assert found == [7, 1, 9]
