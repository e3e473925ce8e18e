"""Stream entry → validated Event, or a rejection with a machine-readable reason.

Values arrive as bytes (we never let redis-py decode: with decode_responses=True one
invalid UTF-8 entry makes the whole XREADGROUP reply raise, on every retry). Each field
is decoded on its own so a bad entry is rejected alone and the rest of its batch goes on.
The rules are CONTRACT §1; docs/contract.md lists them with the reason codes.
"""

from __future__ import annotations

import math
import re
from typing import Final, NamedTuple

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
    layout = _LAYOUTS.get(names := tuple(flat[0::2]))
    if layout is None:
        layout = _learn_layout(names)
    if not layout:
        return None
    u, a, t, w, d, ts, s, m = layout  # -1: absent
    return _plain_event(
        entry_id, flat[u], flat[a] if a >= 0 else b"", flat[t] if t >= 0 else b"",
        flat[w] if w >= 0 else b"", flat[d], flat[ts], flat[s] if s >= 0 else None,
        flat[m] if m >= 0 else None, now_s, max_future_s, max_text_chars,
    )  # fmt: skip


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


def _learn_layout(names: tuple[bytes, ...]) -> tuple[int, ...]:
    """Value positions of _PLAIN_ORDER for this order of names (-1: absent); () when the
    entry cannot take the fast path (another field, a repeated name, or no userId,
    duration or timestamp)."""
    plain = (
        _PLAIN_FIELDS.issuperset(names)
        and len(set(names)) == len(names)
        and {b"userId", b"duration", b"timestamp"} <= set(names)
    )
    layout = (
        tuple(2 * names.index(n) + 1 if n in names else -1 for n in _PLAIN_ORDER) if plain else ()
    )
    if len(names) > _MAX_LAYOUT_NAMES or sum(map(len, names)) > _MAX_LAYOUT_NAME_BYTES:
        return layout  # (never plain: such names are not the contract's) not worth keeping
    if len(_LAYOUTS) >= _MAX_LAYOUTS:  # a producer sending ever new orders: stay bounded
        _LAYOUTS.clear()
    _LAYOUTS[names] = layout
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
    if raw is None:
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
