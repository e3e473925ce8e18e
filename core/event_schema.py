"""The event as a producer writes it: its fields' types, the XADD field list, and its
JSON Schema, all built on the consumer's own rules (pomocore.core.events).

A producer holds an event as a JSON object (or a Python mapping) with typed values;
`stream_fields` turns it into the entry's fields, the way docs/contract.md tells producers
in other languages to: a string as it is (UTF-8), a number as its shortest decimal, a
boolean as `true`/`false`, null (None) left out. `check_event` then runs the consumer's
validator (`parse_checked`) on exactly those fields: an event it accepts is one the
consumer accepts (the consumer's clock being later, a timestamp can only age).

`event_schema` states the same rules as a JSON Schema (docs/event.schema.json). A
property test (tests/core/test_event_schema.py) checks that the schema and
`check_event` accept and reject the same JSON events. Two rules a schema cannot state:
the clock (a timestamp at most POMOCORE_MAX_FUTURE_S ahead of now: `event_schema(now_s=...)`
adds it as a maximum, the committed document has none) and the wire form (a number sent
as a string, e.g. `"12.5"`, is what XADD carries and what the consumer parses; the
schema asks for JSON numbers, whose range it can check).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Final

from pomocore.core.errors import RejectedEvent
from pomocore.core.events import (
    _HEX24_RE,
    _RFC3339_TAIL_RE,
    INVALID_NUMBER,
    INVALID_UTF8,
    MAX_DURATION_S,
    MAX_USER_ID_CHARS,
    Event,
    parse_checked,
)

STRING: Final = "string"
NUMBER: Final = "number"
INTEGER: Final = "integer"
BOOLEAN: Final = "boolean"

# The JSON type of each field of CONTRACT §1 (events.FIELDS, in its order).
FIELD_TYPES: Final[dict[str, str]] = {
    "userId": STRING,
    "app": STRING,
    "title": STRING,
    "url": STRING,
    "duration": NUMBER,
    "timestamp": NUMBER,
    "session": INTEGER,
    "sessionDate": STRING,
    "sessionMinutes": INTEGER,
    "isEnd": BOOLEAN,
    "categorizedDataId": STRING,
    "pomodoroUsageLogId": STRING,
}

# events._INT_RE takes at most 18 digits.
MAX_INTEGER: Final = 10**18 - 1
TEXT_FIELDS: Final = ("app", "title", "url")

# What a value may be: a JSON value that is not an array or object, or raw bytes.
FieldValue = str | bytes | int | float | bool | None
EventFields = Mapping[str, FieldValue]


def stream_fields(event: EventFields) -> dict[bytes, bytes]:
    """The entry's fields for XADD, in the event's order (None values left out).

    A str or bytes value is written as it is, in any field (the wire form: the
    consumer's rules judge it); a bool, int or float only in a field of that JSON type
    (or one the contract does not define): anything else is a TypeError naming the field.
    Raises RejectedEvent(invalid_utf8) for a str that cannot be UTF-8 (a lone surrogate).
    """
    out: dict[bytes, bytes] = {}
    for name, value in event.items():
        if value is not None:
            out[_encode(name, name)] = _value(name, value)
    return out


def check_event(
    event: EventFields,
    *,
    now_s: float | None = None,
    max_future_s: float = 300.0,
    max_text_chars: int = 8192,
) -> tuple[dict[bytes, bytes], Event]:
    """The entry's fields and the Event the consumer will read from them; raises
    RejectedEvent (the consumer's reason and field) or TypeError (see `stream_fields`)."""
    fields = stream_fields(event)
    parsed = parse_checked(
        "",
        fields,
        now_s=time.time() if now_s is None else now_s,
        max_future_s=max_future_s,
        max_text_chars=max_text_chars,
    )
    return fields, parsed


def _encode(name: str, text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"field names are strings, got {type(text).__name__}")
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise RejectedEvent(INVALID_UTF8, name, f"not encodable at {exc.start}") from None


def _value(name: str, value: FieldValue) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return _encode(name, value)
    kind = FIELD_TYPES.get(name)  # None: a field the contract does not define
    if isinstance(value, bool):
        if kind in (BOOLEAN, None):
            return b"true" if value else b"false"
    elif isinstance(value, int):
        if kind in (NUMBER, INTEGER, None):
            return _digits(name, value)
    elif isinstance(value, float):
        if kind == INTEGER and value.is_integer():  # JSON has one number type: 3.0 is 3
            return _digits(name, int(value))
        if kind in (NUMBER, INTEGER, None):
            return repr(value).encode()  # the shortest decimal that reads back the same
    want = f"a {kind}" if kind else "a string, number or boolean"
    raise TypeError(f"{name} must be {want} (or a string as sent), got {type(value).__name__}")


def _digits(name: str, value: int) -> bytes:
    try:
        return str(value).encode()
    except ValueError:  # more digits than Python converts (4300): no field takes it
        raise RejectedEvent(INVALID_NUMBER, name, "too many digits") from None


def _ascii_pattern(pattern: bytes) -> str:
    r"""A bytes regex of events.py as a schema pattern: `\d` there is ASCII, in Python's
    str patterns it is any Unicode digit, so it is spelled [0-9]."""
    return pattern.decode("ascii").replace(r"\d", "[0-9]")


# End of input in both ECMA-262 and Python (`$` also matches before a final newline in
# Python, which jsonschema uses; the validator rejects that newline).
_END: Final = r"(?![\s\S])"
# Leap years of four digits: divisible by 4 but not 100, or by 400 (0000 is one).
_LEAP_YEAR: Final = (
    r"[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[048]|[2468][048]|[13579][26])00"
)
_CALENDAR_DATE: Final = (
    r"[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rf"|(?:{_LEAP_YEAR})-02-29"
)


def event_schema(
    *, max_text_chars: int = 8192, max_future_s: float = 300.0, now_s: float | None = None
) -> dict[str, Any]:
    """The JSON Schema (2020-12) of an event; with `now_s`, timestamps are also bounded by
    `now_s + max_future_s` (the consumer's clock rule)."""
    optional_text = {
        "type": [STRING, "null"],
        "maxLength": max_text_chars,
        "description": f"at most POMOCORE_MAX_TEXT_CHARS ({max_text_chars}) characters "
        "(too_long); app, title and url are not all empty (missing_field)",
    }
    timestamp: dict[str, Any] = {
        "type": NUMBER,
        "minimum": 0,
        "description": "unix seconds (UTC); at most POMOCORE_MAX_FUTURE_S "
        f"({max_future_s:g}) ahead of the consumer's clock, which a schema cannot state "
        "(out_of_range, future_timestamp)",
    }
    if now_s is not None:
        timestamp["maximum"] = now_s + max_future_s
    count = {"type": [INTEGER, "null"], "minimum": 0, "maximum": MAX_INTEGER}
    tail = _ascii_pattern(_RFC3339_TAIL_RE.pattern)
    object_id = {
        "type": [STRING, "null"],
        "pattern": f"^(?:|{_ascii_pattern(_HEX24_RE.pattern)}){_END}",
        "description": "a MongoDB ObjectId: 24 hex digits (invalid_object_id)",
    }
    properties: dict[str, Any] = {
        "userId": {
            "type": STRING,
            "minLength": 1,
            "maxLength": MAX_USER_ID_CHARS,
            "description": "who (missing_field, too_long)",
        },
        **{name: optional_text for name in TEXT_FIELDS},
        "duration": {
            "type": NUMBER,
            "exclusiveMinimum": 0,
            "maximum": MAX_DURATION_S,
            "description": "seconds (missing_field, out_of_range)",
        },
        "timestamp": timestamp,
        "session": {**count, "description": "required when isEnd is true (missing_field)"},
        "sessionDate": {
            "type": [STRING, "null"],
            "pattern": f"^(?:|(?:{_CALENDAR_DATE})(?:{tail})?){_END}",
            "description": "YYYY-MM-DD or RFC 3339, a real calendar date (invalid_date)",
        },
        "sessionMinutes": count,
        "isEnd": {"type": [BOOLEAN, "null"]},
        "categorizedDataId": object_id,
        "pomodoroUsageLogId": object_id,
    }
    one_text = [
        {"required": [n], "properties": {n: {"type": STRING, "minLength": 1}}} for n in TEXT_FIELDS
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pomocore event",
        "description": "One activity event, as a JSON object, before it is written to the "
        "input stream (docs/contract.md: each value as a string; null or an empty string "
        "is the same as leaving the field out). Generated from pomocore.core.events "
        "(pomocore.core.event_schema.schema_text).",
        "type": "object",
        "required": ["userId", "duration", "timestamp"],
        "properties": properties,
        "additionalProperties": {"type": [STRING, NUMBER, BOOLEAN, "null"]},
        "allOf": [
            {"anyOf": one_text},
            {
                "if": {"required": ["isEnd"], "properties": {"isEnd": {"const": True}}},
                "then": {"required": ["session"], "properties": {"session": {"type": INTEGER}}},
            },
        ],
    }


def schema_text() -> str:
    """docs/event.schema.json, byte for byte (the defaults of Settings)."""
    return json.dumps(event_schema(), indent=2, ensure_ascii=False) + "\n"
