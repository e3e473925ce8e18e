"""Stream entry → validated Event, or a rejection with a machine-readable reason.

Values arrive as bytes (we never let redis-py decode: with decode_responses=True one
invalid UTF-8 entry makes the whole XREADGROUP reply raise, on every retry). Each field
is decoded on its own so a bad entry is rejected alone and the rest of its batch goes on.
The rules are CONTRACT §1; docs/contract.md lists them with the reason codes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import repeat
from operator import add
from typing import Final, NamedTuple, cast

import orjson

from pomocore.core.errors import RejectedEvent

# Machine-readable rejection reasons (the `reason` field of a dead letter).
MISSING_FIELD: Final = "missing_field"  # required field absent or empty
INVALID_UTF8: Final = "invalid_utf8"  # a known field is not valid UTF-8
INVALID_NUMBER: Final = "invalid_number"  # not a number / not an integer
NOT_FINITE: Final = "not_finite"  # NaN or ±inf
OUT_OF_RANGE: Final = "out_of_range"  # number outside the contract's range
FUTURE_TIMESTAMP: Final = "future_timestamp"  # more than max_future_s ahead of now
TOO_LONG: Final = "too_long"  # string longer than allowed
INVALID_BOOL: Final = "invalid_bool"  # isEnd not true/false/1/0
INVALID_DATE: Final = "invalid_date"  # sessionDate not YYYY-MM-DD / RFC 3339
INVALID_OBJECT_ID: Final = "invalid_object_id"  # not 24 hex digits
MAX_DELIVERIES: Final = "max_deliveries"  # delivered too often (poison message)
# Ownership of producer-supplied ids (docs/contract.md, "Ids supplied by the producer"):
FOREIGN_DOCUMENT: Final = "foreign_document"  # pomodoroUsageLogId names another user's log
UNKNOWN_DOCUMENT: Final = "unknown_document"  # pomodoroUsageLogId names no existing log
TOO_LARGE: Final = "too_large"  # over POMOCORE_MAX_ENTRY_BYTES or MAX_ENTRY_FIELDS: unread

REASONS: Final = (
    MISSING_FIELD,
    INVALID_UTF8,
    INVALID_NUMBER,
    NOT_FINITE,
    OUT_OF_RANGE,
    FUTURE_TIMESTAMP,
    TOO_LONG,
    INVALID_BOOL,
    INVALID_DATE,
    INVALID_OBJECT_ID,
    MAX_DELIVERIES,
    FOREIGN_DOCUMENT,
    UNKNOWN_DOCUMENT,
    TOO_LARGE,
)

# The fields of an entry that CONTRACT §1 defines; any other field is ignored.
FIELDS: Final = (
    "userId",
    "app",
    "title",
    "url",
    "duration",
    "timestamp",
    "session",
    "sessionDate",
    "sessionMinutes",
    "isEnd",
    "categorizedDataId",
    "pomodoroUsageLogId",
)

MAX_USER_ID_CHARS: Final = 128
# An entry with more fields than this is too_large whatever its bytes: each field costs
# the consumer two Python objects (~80 bytes) however short, and the contract has 12.
MAX_ENTRY_FIELDS: Final = 256
MAX_DURATION_S: Final = 86_400.0

_DATE_RE: Final = re.compile(rb"(\d{4})-(\d{2})-(\d{2})")
_RFC3339_TAIL_RE: Final = re.compile(rb"[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_HEX24_RE: Final = re.compile(rb"[0-9a-fA-F]{24}")
_INT_RE: Final = re.compile(rb"[+-]?\d{1,18}")
_TRUE: Final = frozenset({b"true", b"1"})
_FALSE: Final = frozenset({b"false", b"0"})


class Oversized(NamedTuple):
    """In place of the fields of an entry over POMOCORE_MAX_ENTRY_BYTES or MAX_ENTRY_FIELDS
    that the guarded read (consumers/reads.py) left on the server: it is dead-lettered as
    too_large without ever being read whole. `size_bytes` as `entry_bytes` counts."""

    size_bytes: int
    fields: int = -1  # (unknown)


def too_large(fields: dict[bytes, bytes] | list[bytes] | Oversized, max_entry_bytes: int) -> str:
    """Why an entry is too_large ("" when it is not): its size against the limits."""
    if isinstance(fields, Oversized):
        size, count = fields.size_bytes, fields.fields
    else:
        size, count = entry_bytes(fields), entry_fields(fields)
    if size > max_entry_bytes or count > MAX_ENTRY_FIELDS:
        shown = f"{size} bytes" + (f", {count} fields" if count >= 0 else "")
        return f"{shown} (at most {max_entry_bytes} bytes and {MAX_ENTRY_FIELDS} fields)"
    return ""


class Event(NamedTuple):
    """One accepted usage slice (a NamedTuple: built once per event on the hot path)."""

    entry_id: str
    user_id: str
    app: str
    title: str
    url: str
    duration_s: float
    timestamp_s: float
    session: int | None = None
    session_date: str | None = None
    session_minutes: int | None = None
    is_end: bool = False
    categorized_data_id: str | None = None
    usage_log_id: str | None = None


def parse_entry(
    entry_id: str,
    fields: dict[bytes, bytes],
    *,
    now_s: float,
    max_future_s: float = 300.0,
    max_text_chars: int = 8192,
) -> Event:
    """Validate one stream entry. Raises RejectedEvent with the reason of the first failure.

    Per event on the hot path: `parse_plain` accepts the common, plainly valid entry with
    a few cheap checks; anything it is not sure of goes to `parse_checked`, which applies
    every rule in order and names the reason. Both agree on every input (property test).
    """
    event = parse_plain(entry_id, fields, now_s, max_future_s, max_text_chars)
    if event is None:
        event = parse_checked(
            entry_id, fields, now_s=now_s, max_future_s=max_future_s, max_text_chars=max_text_chars
        )
    return event


def parse_plain(
    entry_id: str,
    fields: dict[bytes, bytes],
    now_s: float,
    max_future_s: float,
    max_text_chars: int,
) -> Event | None:
    """The event when the entry is plainly valid, else None (then the checked path decides)."""
    if not _PLAIN_FIELDS.issuperset(fields):
        return None
    get = fields.get
    return _plain_event(
        entry_id, get(b"userId", b""), get(b"app", b""), get(b"title", b""), get(b"url", b""),
        get(b"duration", b"_"), get(b"timestamp", b"_"), get(b"session"),
        get(b"sessionMinutes"), now_s, max_future_s, max_text_chars,
    )  # fmt: skip


def parse_plain_flat(
    entry_id: str,
    flat: list[bytes],
    now_s: float,
    max_future_s: float,
    max_text_chars: int,
) -> Event | None:
    """`parse_plain` of an entry as XREADGROUP sends it, `[name, value, name, value, ...]`.

    Producers write their fields in one order, so the positions of the values are worked
    out once per order of names and the values are taken by index: no dict per entry.
    """
    if len(flat) % 2:
        return None
    layout = plain_layout(tuple(flat[0::2]))
    if not layout:
        return None
    u, a, t, w, d, ts, s, m = layout  # -1: absent
    return _plain_event(
        entry_id, flat[u], flat[a] if a >= 0 else b"", flat[t] if t >= 0 else b"",
        flat[w] if w >= 0 else b"", flat[d], flat[ts], flat[s] if s >= 0 else None,
        flat[m] if m >= 0 else None, now_s, max_future_s, max_text_chars,
    )  # fmt: skip


def parse_plain_columns(
    entry_ids: Sequence[str],
    columns: Sequence[Sequence[bytes]],
    layout: tuple[int, ...],
    now_s: float,
    max_future_s: float,
    max_text_chars: int,
) -> list[Event] | None:
    """`parse_plain_flat` of many entries at once, all laid out as `layout` says (from
    `plain_layout`): their Events, or None unless every one of them is plainly valid.
    `columns[i]`: the item at position i of each entry's flat list, one per entry (only the
    value positions of the layout are read: the caller checked the names).

    The per-event work runs in C, a column at a time: texts
    decoded in one call per column, numbers parsed by orjson in one call per column, the
    bounds checked with min() and max(), the Events built by map(). One entry that is not
    plainly valid makes the whole call None, and the caller takes a smaller group or the
    per-entry path; so an Event comes back only where `parse_plain_flat` returns the same
    (property tests in tests/core/test_columns.py).
    """
    if not entry_ids:
        return []
    count = len(entry_ids)
    empty = (b"",) * count  # an absent app, title or url
    u, a, t, w, d, ts, s, m, e, sd = layout  # -1: absent
    raw_user, raw_duration, raw_timestamp = columns[u], columns[d], columns[ts]
    raw_app = columns[a] if a >= 0 else empty
    raw_title = columns[t] if t >= 0 else empty
    raw_url = columns[w] if w >= 0 else empty
    users = _texts(raw_user)
    if users is None:
        return None
    user_chars = list(map(len, users))
    if not (min(user_chars) > 0 and max(user_chars) <= MAX_USER_ID_CHARS):
        return None
    # Bytes bound characters from above (see _plain_event); a zero sum: all three empty.
    text_bytes = list(map(add, map(add, map(len, raw_app), map(len, raw_title)),
                          map(len, raw_url)))  # fmt: skip
    if not (min(text_bytes) > 0 and max(text_bytes) <= max_text_chars):
        return None
    apps, titles, urls = _texts(raw_app), _texts(raw_title), _texts(raw_url)
    durations, timestamps = _numbers(raw_duration), _numbers(raw_timestamp)
    if apps is None or titles is None or urls is None or durations is None or timestamps is None:
        return None
    if not (
        min(durations) > 0.0
        and max(durations) <= MAX_DURATION_S
        and min(timestamps) >= 0.0
        and max(timestamps) <= now_s + max_future_s
    ):
        return None
    none = (None,) * count
    sessions = _counts(columns[s]) if s >= 0 else none
    minutes = _counts(columns[m]) if m >= 0 else none
    ends = _ends(columns[e]) if e >= 0 else (False,) * count
    dates = _dates(columns[sd]) if sd >= 0 else none
    if sessions is None or minutes is None or ends is None or dates is None:
        return None
    if s < 0 and True in ends:  # an end of session names its session
        return None
    return list(map(_tuple_new, repeat(Event), zip(
        entry_ids, users, apps, titles, urls, durations, timestamps, sessions, dates,
        minutes, ends, none, none, strict=True,
    )))  # fmt: skip


def _ends(raw: Sequence[bytes]) -> list[bool | None] | None:
    """A column of isEnd values as bools (an empty value: False), None if one is not
    true/false/1/0 in any case."""
    ends = list(map(_IS_END.get, raw))
    return None if None in ends else ends


def _case_variants(word: bytes) -> list[bytes]:
    variants = [b""]
    for byte in word:
        letter = bytes([byte])
        variants = [v + c for v in variants for c in {letter.lower(), letter.upper()}]
    return variants


# isEnd as _bool reads it, every spelling: 16 of "true", 32 of "false", 1, 0 and empty.
_IS_END: Final[dict[bytes, bool]] = {
    b"": False,
    **dict.fromkeys([*_case_variants(b"true"), b"1"], True),
    **dict.fromkeys([*_case_variants(b"false"), b"0"], False),
}


def _dates(raw: Sequence[bytes]) -> list[str | None] | None:
    """A column of sessionDate values as `_session_date` reads them (an empty value:
    None), None if one is not a date. A producer writes few distinct dates: each is
    checked once and then found in _DATES."""
    found: list[object] = list(map(_DATES.get, raw, repeat(_UNKNOWN)))
    if _UNKNOWN not in found:
        return cast(list[str | None], found)
    dates: list[str | None] = []
    for value, date in zip(raw, found, strict=True):
        if date is _UNKNOWN:
            try:
                date = _date_of(value)
            except RejectedEvent:
                return None
            if len(value) <= 64:  # (a longer one is not worth keeping)
                if len(_DATES) >= _MAX_DATES:
                    _DATES.clear()
                _DATES[value] = date
        dates.append(cast(str | None, date))
    return dates


_UNKNOWN: Final = object()
_DATES: dict[bytes, str | None] = {b"": None}
_MAX_DATES: Final = 4096


# An Event from the tuple of its fields, without running Python code: ~0.2 µs, against
# ~0.4 for Event(*fields) (NamedTuple's __new__ is a Python function).
_tuple_new: Final = tuple.__new__
# The bytes of a plain number; a column holding no other byte but the commas that join
# it is one JSON array of exactly its values (no space, underscore or bracket either).
_NUMBER_BYTES: Final = b"0123456789.eE+-"
# The largest count of 18 digits (_INT_RE), without a leading zero (JSON has none).
_MAX_COUNT: Final = 10**18 - 1


def _texts(raw: Sequence[bytes]) -> list[str] | None:
    """A column of UTF-8 values decoded, None if one is not valid UTF-8."""
    joined = b"\x00".join(raw)
    try:
        if joined.count(b"\x00") == len(raw) - 1:  # no value holds the separator
            # Valid UTF-8 iff each value is: a sequence cut short before the (ASCII)
            # separator is invalid, so no sequence spans two values.
            return joined.decode().split("\x00")
        return list(map(bytes.decode, raw))
    except UnicodeDecodeError:
        return None


def _numbers(raw: Sequence[bytes]) -> Sequence[float] | None:
    """A column of numbers as `float()` parses them, None unless each is a plain number
    (as `_plain_event` has it: at most 64 bytes, no space or underscore).

    orjson parses the column as one JSON array: ~40 ns a value, against ~260 for float()
    on bytes, which rounds correctly but slowly on 13-digit timestamps. orjson rounds
    correctly too (a property test pins it to float()). What JSON does not take (`+5`,
    `.5`, `1e400`, an empty value) and integers (orjson makes them ints; `-0` would lose
    its sign) go through float() instead.
    """
    joined = b",".join(raw)
    if len(joined.translate(None, _NUMBER_BYTES)) != len(raw) - 1 or max(map(len, raw)) > 64:
        return None  # some value holds another byte than a plain number's
    try:
        values: list[float] = orjson.loads(b"[" + joined + b"]")
        # (one value: an empty one makes "[]")
        if len(values) == len(raw) and all(map(isinstance, values, repeat(float))):
            return values
    except orjson.JSONDecodeError:
        pass
    try:
        return list(map(float, raw))
    except ValueError:
        return None


def _counts(raw: Sequence[bytes]) -> Sequence[int] | None:
    """A column of session or sessionMinutes values as ints, None unless each is 1-18
    ASCII digits."""
    if not b"".join(raw).isdigit():
        return None
    try:
        values: list[int] = orjson.loads(b"[" + b",".join(raw) + b"]")
        if max(values) <= _MAX_COUNT:
            return values
    except orjson.JSONDecodeError:  # an empty value, a leading zero
        pass
    if not 0 < min(map(len, raw)) <= max(map(len, raw)) <= 18:
        return None
    return list(map(int, raw))


def entry_bytes(fields: dict[bytes, bytes] | list[bytes]) -> int:
    """What POMOCORE_MAX_ENTRY_BYTES counts: the bytes of an entry's names and values (the
    guarded read script, consumers/reads.py, counts the same on the server)."""
    if isinstance(fields, dict):
        return sum(map(len, fields)) + sum(map(len, fields.values()))
    return sum(map(len, fields))


def entry_fields(fields: dict[bytes, bytes] | list[bytes]) -> int:
    """Fields of an entry (a flat list holds two items per field)."""
    return len(fields) if isinstance(fields, dict) else (len(fields) + 1) // 2


def fields_dict(flat: list[bytes]) -> dict[bytes, bytes]:
    """A flat `[name, value, ...]` entry as a dict (a repeated name: the last value wins)."""
    it = iter(flat)
    return dict(zip(it, it, strict=False))


_PLAIN_ORDER: Final = (
    b"userId", b"app", b"title", b"url", b"duration", b"timestamp", b"session",
    b"sessionMinutes",
)  # fmt: skip
_LAYOUTS: dict[tuple[bytes, ...], tuple[int, ...]] = {}
_MAX_LAYOUTS: Final = 256
# Orders of names kept only when their names are this short in all: the cache then holds
# at most _MAX_LAYOUTS x (this + per-name overhead) bytes (~0.4 MB; a producer's 1 MB field
# name is looked at, never kept). The contract's names add up to 85 bytes.
_MAX_LAYOUT_NAME_BYTES: Final = 512
_MAX_LAYOUT_NAMES: Final = 32


def plain_layout(names: tuple[bytes, ...]) -> tuple[int, ...]:
    """Value positions of userId, app, title, url, duration, timestamp, session and
    sessionMinutes in an entry with these names in this order (-1: absent); () when such
    an entry cannot take the fast path."""
    layout = _LAYOUTS.get(names)
    return _learn_layout(names, _PLAIN_ORDER, _LAYOUTS) if layout is None else layout


def column_layout(names: tuple[bytes, ...]) -> tuple[int, ...]:
    """`plain_layout` with the positions of isEnd and sessionDate after the others: the
    layout `parse_plain_columns` takes (() when it takes no entry with these names)."""
    layout = _COLUMN_LAYOUTS.get(names)
    return _learn_layout(names, _COLUMN_ORDER, _COLUMN_LAYOUTS) if layout is None else layout


_COLUMN_ORDER: Final = (*_PLAIN_ORDER, b"isEnd", b"sessionDate")
_COLUMN_LAYOUTS: dict[tuple[bytes, ...], tuple[int, ...]] = {}


def _learn_layout(
    names: tuple[bytes, ...],
    order: tuple[bytes, ...],
    cache: dict[tuple[bytes, ...], tuple[int, ...]],
) -> tuple[int, ...]:
    """Value positions of `order` for this order of names (-1: absent); () when the entry
    cannot take the fast path (a field not in `order`, a repeated name, or no userId,
    duration or timestamp)."""
    plain = (
        set(order).issuperset(names)
        and len(set(names)) == len(names)
        and {b"userId", b"duration", b"timestamp"} <= set(names)
    )
    layout = tuple(2 * names.index(n) + 1 if n in names else -1 for n in order) if plain else ()
    if len(names) > _MAX_LAYOUT_NAMES or sum(map(len, names)) > _MAX_LAYOUT_NAME_BYTES:
        return layout  # (never plain: such names are not the contract's) not worth keeping
    if len(cache) >= _MAX_LAYOUTS:  # a producer sending ever new orders: stay bounded
        cache.clear()
    cache[names] = layout
    return layout


def _plain_event(
    entry_id: str,
    raw_user: bytes,
    raw_app: bytes,
    raw_title: bytes,
    raw_url: bytes,
    raw_duration: bytes,
    raw_timestamp: bytes,
    session: bytes | None,
    minutes: bytes | None,
    now_s: float,
    max_future_s: float,
    max_text_chars: int,
) -> Event | None:
    try:
        user_id, app = raw_user.decode(), raw_app.decode()
        title, url = raw_title.decode(), raw_url.decode()
        duration, timestamp = float(raw_duration), float(raw_timestamp)
    except (UnicodeDecodeError, ValueError):
        return None
    # Bytes bound characters from above: texts whose bytes add up to at most
    # max_text_chars are each short enough (longer ones take the checked path).
    plain = (
        0 < len(user_id) <= MAX_USER_ID_CHARS
        and (app or title or url)
        and len(raw_app) + len(raw_title) + len(raw_url) <= max_text_chars
        and 0.0 < duration <= MAX_DURATION_S
        and 0.0 <= timestamp <= now_s + max_future_s
        and len(raw_duration) <= 64
        and len(raw_timestamp) <= 64
        and b"_" not in raw_duration
        and b"_" not in raw_timestamp
        and raw_duration.strip() is raw_duration  # (the same object when nothing to strip)
        and raw_timestamp.strip() is raw_timestamp
        and (session is None or (0 < len(session) <= 18 and session.isdigit()))
        and (minutes is None or (0 < len(minutes) <= 18 and minutes.isdigit()))
    )
    if not plain:
        return None
    return Event(
        entry_id, user_id, app, title, url, duration, timestamp,
        int(session) if session else None, None, int(minutes) if minutes else None,
    )  # fmt: skip


def parse_checked(
    entry_id: str,
    fields: dict[bytes, bytes],
    *,
    now_s: float,
    max_future_s: float = 300.0,
    max_text_chars: int = 8192,
) -> Event:
    """Every rule of CONTRACT §1 in order; raises RejectedEvent naming the first failure."""
    user_id = _text(fields, "userId", MAX_USER_ID_CHARS)
    if not user_id:
        raise RejectedEvent(MISSING_FIELD, "userId")
    app = _text(fields, "app", max_text_chars)
    title = _text(fields, "title", max_text_chars)
    url = _text(fields, "url", max_text_chars)
    if not (app or title or url):
        raise RejectedEvent(MISSING_FIELD, "app", "app, title and url are all empty")
    duration = _number(fields, "duration")
    if not 0.0 < duration <= MAX_DURATION_S:
        raise RejectedEvent(OUT_OF_RANGE, "duration", f"must be in (0, {MAX_DURATION_S:g}]")
    timestamp = _number(fields, "timestamp")
    if timestamp < 0:
        raise RejectedEvent(OUT_OF_RANGE, "timestamp", "before 1970")
    if timestamp > now_s + max_future_s:
        raise RejectedEvent(FUTURE_TIMESTAMP, "timestamp", f"more than {max_future_s:g}s ahead")
    is_end = _bool(fields, "isEnd")
    session = _int(fields, "session")
    if is_end and session is None:
        raise RejectedEvent(MISSING_FIELD, "session", "required when isEnd is true")
    return Event(
        entry_id=entry_id,
        user_id=user_id,
        app=app,
        title=title,
        url=url,
        duration_s=duration,
        timestamp_s=timestamp,
        session=session,
        session_date=_session_date(fields),
        session_minutes=_int(fields, "sessionMinutes"),
        is_end=is_end,
        categorized_data_id=_object_id(fields, "categorizedDataId"),
        usage_log_id=_object_id(fields, "pomodoroUsageLogId"),
    )


_KEYS: Final = {name: name.encode() for name in FIELDS}
# Entries with only these fields (any subset) can take the fast path.
_PLAIN_FIELDS: Final = frozenset(
    _KEYS[name]
    for name in (
        "userId",
        "app",
        "title",
        "url",
        "duration",
        "timestamp",
        "session",
        "sessionMinutes",
    )
)


def _raw(fields: dict[bytes, bytes], name: str) -> bytes | None:
    value = fields.get(_KEYS[name])
    return value if value else None  # an empty value counts as absent


def _text(fields: dict[bytes, bytes], name: str, max_chars: int) -> str:
    raw = _raw(fields, name)
    if raw is None:
        return ""
    if len(raw) > 4 * max_chars:  # cheap bound before decoding a huge value
        raise RejectedEvent(TOO_LONG, name, f"longer than {max_chars} characters")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedEvent(INVALID_UTF8, name, f"byte offset {exc.start}") from None
    if len(text) > max_chars:
        raise RejectedEvent(TOO_LONG, name, f"longer than {max_chars} characters")
    return text


def _number(fields: dict[bytes, bytes], name: str) -> float:
    raw = _raw(fields, name)
    if raw is None:
        raise RejectedEvent(MISSING_FIELD, name)
    # float() also takes "1_000" and " 5 "; Go's ParseFloat (the old service) takes
    # neither, and the contract's numbers carry no spaces.
    if len(raw) > 64 or b"_" in raw or raw.strip() != raw:
        raise RejectedEvent(INVALID_NUMBER, name)
    try:
        value = float(raw)
    except ValueError:
        raise RejectedEvent(INVALID_NUMBER, name) from None
    if not math.isfinite(value):
        raise RejectedEvent(NOT_FINITE, name)
    return value


def _int(fields: dict[bytes, bytes], name: str) -> int | None:
    raw = _raw(fields, name)
    if raw is None:
        return None
    if not _INT_RE.fullmatch(raw):
        raise RejectedEvent(INVALID_NUMBER, name, "expected an integer")
    value = int(raw)
    if value < 0:
        raise RejectedEvent(OUT_OF_RANGE, name, "must be >= 0")
    return value


def _bool(fields: dict[bytes, bytes], name: str) -> bool:
    raw = _raw(fields, name)
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise RejectedEvent(INVALID_BOOL, name, "expected true/false/1/0")


def _session_date(fields: dict[bytes, bytes]) -> str | None:
    """`YYYY-MM-DD`, or the date part of an RFC 3339 timestamp as written (its own offset)."""
    raw = _raw(fields, "sessionDate")
    return None if raw is None else _date_of(raw)


def _date_of(raw: bytes) -> str | None:
    """A sessionDate value's date; raises RejectedEvent when it is none (empty: None)."""
    if not raw:
        return None
    match = _DATE_RE.match(raw)
    tail = raw[10:]
    if match is None or (tail and not _RFC3339_TAIL_RE.fullmatch(tail)):
        raise RejectedEvent(INVALID_DATE, "sessionDate", "expected YYYY-MM-DD or RFC 3339")
    year, month, day = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        raise RejectedEvent(INVALID_DATE, "sessionDate", "no such date")
    return raw[:10].decode("ascii")


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _object_id(fields: dict[bytes, bytes], name: str) -> str | None:
    raw = _raw(fields, name)
    if raw is None:
        return None
    if not _HEX24_RE.fullmatch(raw):
        raise RejectedEvent(INVALID_OBJECT_ID, name, "expected 24 hex digits")
    return raw.decode("ascii").lower()
