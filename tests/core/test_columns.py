"""Validation in columns (`parse_plain_columns`, consumers.batch.validate) against the
per-entry path, on any input: the same events, dead letters and trimmed ids, in order."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pomocore.consumers import batch as batch_module
from pomocore.consumers.batch import (
    COLUMN_GROUP_MIN,
    COLUMN_PARTS,
    Entry,
    validate,
    validate_each,
    validate_one,
)
from pomocore.core.events import _numbers, column_layout, parse_plain_columns
from pomocore.core.settings import Settings

from .test_events import _NAMES, _VALUE, NOW, entry

SETTINGS = Settings(max_text_chars=100)

# Numbers as producers write them, and the edges of the JSON grammar and of float().
_NUMBER = st.one_of(
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?\Z"),
    st.from_regex(r"\A[+-]?[0-9]{0,30}\.?[0-9]{0,30}([eE][+-]?[0-9]{1,4})?\Z"),
    st.floats(allow_nan=False).map(repr),
    st.floats(min_value=1e9, max_value=2e9).map(lambda f: f"{f:.3f}"),
    st.sampled_from(["-0", "-0.0", "0", "1e400", "2.2250738585072011e-308", "4.9e-324",
                     "9007199254740993", "0.1e1", "1" * 64, "1" * 65, "1_0", ".5", "5."]),
).map(str.encode)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(_NUMBER, min_size=1, max_size=5))
@example([b"-0"])
@example([b"-0", b"1.5"])
def test_numbers_parse_as_float_does(raw: list[bytes]) -> None:
    """orjson's parse of a column is float()'s, bit for bit (sign of zero included), or
    the column is refused; never a number float() refuses."""
    parsed = _numbers(raw)
    if parsed is None:
        return
    expected = [float(value) for value in raw]
    assert [math.copysign(1, x) for x in parsed] == [math.copysign(1, x) for x in expected]
    assert [x.hex() for x in parsed] == [x.hex() for x in expected]
    assert all(type(x) is float for x in parsed)


def _flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [x for pair in fields.items() for x in pair]


def _columns(flats: list[list[bytes]]) -> list[tuple[bytes, ...]]:
    return list(zip(*flats, strict=True))


_ORDERS = st.permutations(
    [b"userId", b"app", b"title", b"url", b"duration", b"timestamp", b"session",
     b"sessionMinutes", b"isEnd", b"sessionDate"]
).flatmap(lambda names: st.integers(3, len(names)).map(lambda n: names[:n]))  # fmt: skip
_GOOD = {
    b"userId": b"u1", b"app": b"Code", b"title": b"main.py", b"url": b"", b"duration": b"12.5",
    b"timestamp": str(NOW - 10).encode(), b"session": b"3", b"sessionMinutes": b"25",
    b"isEnd": b"true", b"sessionDate": b"2026-11-22",
}  # fmt: skip
_EDGES = [b"TRUE", b"False", b"0", b"", b"2026-02-29", b"2028-02-29",
                     b"2026-11-22T10:00:00+09:00", b"2026-11-22x", b"007", b"1" * 19,
                     b"1" * 18, b"-0", b"5e-324", b"86400", b"86400.001", b"1e5", b"-1",
                     str(NOW + 299).encode(), str(NOW + 301).encode(), b"1.5e9", b"x" * 101,
                     "é".encode() * 60, b"\x00", b"a\x00b", b" 5", b"5 ", b"1_0", b"nan",
                     b"inf", b"+5", b".5", b"5.", b"0x10", "١".encode(), b"\xff", b"9" * 65,
          b"1." + b"0" * 62, b"1." + b"0" * 63, b"0" * 64 + b"5", b"u" * 128,
          b"u" * 129]  # fmt: skip
_COLUMN_VALUE = st.one_of(st.sampled_from(_EDGES), _VALUE)


def test_each_edge_value_in_each_field_agrees() -> None:
    """Every edge value in every field of an otherwise valid group of entries: the columns
    refuse the group or give the per-entry path's events (deterministic, all pairs)."""
    names = list(_GOOD)
    layout = column_layout(tuple(names))
    ids = [f"{i}-0" for i in range(4)]
    for name in names:
        for value in _EDGES:
            rows = [dict(_GOOD) for _ in ids]
            rows[2][name] = value
            flats = [[x for n in names for x in (n, row[n])] for row in rows]
            each = validate_each(list(zip(ids, flats, strict=True)), SETTINGS, NOW)
            got = parse_plain_columns(ids, _columns(flats), layout, NOW, 300.0, 100)
            assert got is None or repr(got) == repr(each.accepted), (name, value)
            if len(each.accepted) == len(ids) and value.isascii() and value.strip() == value:
                assert got is not None or name in (b"session", b"sessionMinutes"), (name, value)


@settings(max_examples=400, deadline=None)
@given(
    _ORDERS,
    st.lists(st.dictionaries(st.sampled_from(list(_GOOD)), _COLUMN_VALUE, max_size=3),
             min_size=1, max_size=6),
)  # fmt: skip
def test_columns_agree_with_the_per_entry_path(
    names: list[bytes], changes: list[dict[bytes, bytes]]
) -> None:
    """Entries of one layout, each a valid entry with a few values changed: the columns
    give each entry's event, or refuse the group; they never accept what the per-entry
    path rejects, nor give another event."""
    flats = [[x for n in names for x in (n, {**_GOOD, **c}[n])] for c in changes]
    layout = column_layout(tuple(names))
    ids = [f"{i}-0" for i in range(len(flats))]
    if not layout:  # (names without userId, duration or timestamp)
        return
    each = validate_each(list(zip(ids, flats, strict=True)), SETTINGS, NOW)
    got = parse_plain_columns(ids, _columns(flats), layout, NOW, SETTINGS.max_future_s, 100)
    if got is not None:
        assert repr(got) == repr(each.accepted)
    if all(not c for c in changes) and len(each.accepted) == len(flats):
        assert got is not None  # valid entries of plain values: the columns take them


def test_columns_take_plainly_valid_entries() -> None:
    flats = [_flat(entry(userId=f"u{i}", session="2", sessionMinutes="50")) for i in range(20)]
    names = tuple(flats[0][0::2])
    ids = [f"{i}-0" for i in range(20)]
    got = parse_plain_columns(ids, _columns(flats), column_layout(names), NOW, 300.0, 8192)
    assert got is not None
    each = validate_each(list(zip(ids, flats, strict=True)), SETTINGS, NOW)
    assert repr(got) == repr(each.accepted)


_STRAY = st.one_of(
    st.lists(st.tuples(_NAMES, _VALUE), max_size=10).map(lambda p: [x for q in p for x in q]),
    st.none(),
    st.dictionaries(_NAMES, _VALUE, max_size=9),
)
_ENTRY_FIELDS = st.one_of(
    st.just(_flat(entry(session="2", sessionMinutes="25"))),
    st.just(_flat(entry(session="4", sessionMinutes="50", isEnd="true", sessionDate="2026-11-22"))),
    st.dictionaries(st.sampled_from(list(_GOOD)), _COLUMN_VALUE, max_size=2).map(
        lambda c: _flat({**entry(session="1", sessionMinutes="25"), **c})
    ),
    _STRAY,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ENTRY_FIELDS, st.integers(0, 3)), min_size=0, max_size=70))
def test_validate_agrees_with_validate_each(items: list[tuple[object, int]]) -> None:
    """Whole batches, of layouts mixed in any order, with stray, trimmed and dict entries
    and repeats (runs of one entry): the same ValidatedBatch, item for item."""
    entries: list[Entry] = []
    for fields, repeats in items:
        for _ in range(repeats + 1):
            copy = list(fields) if isinstance(fields, list) else fields
            entries.append((f"{len(entries)}-0", copy))  # type: ignore[arg-type]
    assert repr(validate(entries, SETTINGS, NOW)) == repr(validate_each(entries, SETTINGS, NOW))


def test_a_batch_with_one_bad_entry_keeps_the_rest_in_columns() -> None:
    """One rejected entry among 100 of one layout: a dead letter in its place, the other
    events in order."""
    flats = [_flat(entry(userId=f"u{i}", session="2", sessionMinutes="50")) for i in range(100)]
    flats[37][flats[37].index(b"duration") + 1] = b"-5"
    entries: list[Entry] = [(f"{i}-0", f) for i, f in enumerate(flats)]
    out = validate(entries, SETTINGS, NOW)
    assert [d.entry_id for d in out.dead_letters] == ["37-0"]
    assert out.dead_letters[0].reason == "out_of_range"
    assert [e.entry_id for e in out.accepted] == [f"{i}-0" for i in range(100) if i != 37]
    assert len(entries) >= COLUMN_GROUP_MIN


def test_mixed_layouts_agree_with_validate_each() -> None:
    """Layouts of one length in other orders, another length, strays and trimmed entries
    among them, at every spacing: the result of the per-entry path, in order."""
    plain = _flat(entry(session="2", sessionMinutes="25"))
    pairs = list(zip(plain[0::2], plain[1::2], strict=True))
    reordered = [x for pair in reversed(pairs) for x in pair]
    other = [x for pair in [*pairs[:6], (b"other", b"1"), (b"session", b"2")] for x in pair]
    ending = _flat(entry(session="4", sessionMinutes="50", isEnd="true", sessionDate="2026-11-22"))
    bad = _flat(entry(duration="-1", session="2", sessionMinutes="25"))
    for spacing in (1, 2, 3, 5, 17):
        for stray in (reordered, other, ending, bad, None, plain[:-1]):
            fields = [stray if i % spacing == 1 else plain for i in range(60)]
            fields += [ending] * 20 + [reordered] * (spacing % 3)
            entries: list[Entry] = [(f"{i}-0", f) for i, f in enumerate(fields)]
            got = validate(entries, SETTINGS, NOW)
            assert repr(got) == repr(validate_each(entries, SETTINGS, NOW)), (spacing, stray)


def test_bad_entries_cost_a_bounded_number_of_column_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every entry of a slice rejected: the columns are tried once, then in COLUMN_PARTS
    parts, then entry by entry. One rejected entry (first, where a depth-first split
    looks last): the others still go in columns, at most COLUMN_GROUP_MIN entries one by
    one. The results are the per-entry path's either way."""
    calls: list[int] = []
    one_by_one: list[str] = []

    def counted(ids: list[str], *args: object) -> object:
        calls.append(len(ids))
        return parse_plain_columns(ids, *args)  # type: ignore[arg-type]

    def counted_one(entry_id: str, *args: object) -> object:
        one_by_one.append(entry_id)
        return validate_one(entry_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_module, "parse_plain_columns", counted)
    monkeypatch.setattr(batch_module, "validate_one", counted_one)
    flats = [_flat(entry(userId=f"u{i}", duration="-1")) for i in range(500)]
    entries: list[Entry] = [(f"{i}-0", f) for i, f in enumerate(flats)]
    out = validate(entries, SETTINGS, NOW)
    assert len(out.dead_letters) == 500 and len(calls) == 1 + COLUMN_PARTS
    assert repr(out) == repr(validate_each(entries, SETTINGS, NOW))

    calls.clear()
    one_by_one.clear()
    flats = [_flat(entry(userId=f"u{i}")) for i in range(500)]
    flats[0] = _flat(entry(userId="u0", duration="-1"))
    entries = [(f"{i}-0", f) for i, f in enumerate(flats)]
    out = validate(entries, SETTINGS, NOW)
    assert [d.entry_id for d in out.dead_letters] == ["0-0"]
    assert 1 <= len(one_by_one) <= COLUMN_GROUP_MIN
    # tried: the 500, its 4 parts of 125, the first one's 4 of ~31, the first one's 4 of ~8
    assert sum(calls) <= 500 + 500 + 125 + 32
    one_by_one.clear()
    assert repr(out) == repr(validate_each(entries, SETTINGS, NOW))
