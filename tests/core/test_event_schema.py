"""The event's JSON Schema (docs/event.schema.json) and the producer's check (the
consumer's validator on the fields `stream_fields` builds) accept and reject the same
events: a hypothesis property over JSON events with values of every JSON type, near
every bound the rules have. Plus: the committed document is the generated one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pomocore.core.errors import RejectedEvent
from pomocore.core.event_schema import (
    FIELD_TYPES,
    MAX_INTEGER,
    check_event,
    event_schema,
    schema_text,
    stream_fields,
)
from pomocore.core.events import FIELDS, MISSING_FIELD, parse_checked

ROOT = Path(__file__).resolve().parents[2]
NOW_S = 1_770_000_000.5  # the clock of both sides in the property (2026-02)
MAX_FUTURE_S = 300.0
MAX_TEXT_CHARS = 64  # the lowest the setting allows: lengths near the bound are cheap
SCHEMA = event_schema(max_text_chars=MAX_TEXT_CHARS, max_future_s=MAX_FUTURE_S, now_s=NOW_S)
VALIDATOR = Draft202012Validator(SCHEMA)


def test_committed_schema_is_the_generated_one() -> None:
    committed = (ROOT / "docs/event.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), (
        "docs/event.schema.json is stale: .venv/bin/python -c 'from pomocore.core.event_schema "
        'import schema_text; print(schema_text(), end="")\' > docs/event.schema.json'
    )


def test_schema_is_valid_json_schema() -> None:
    Draft202012Validator.check_schema(json.loads(schema_text()))
    Draft202012Validator.check_schema(SCHEMA)


def test_every_contract_field_has_one_type_and_a_property() -> None:
    assert tuple(FIELD_TYPES) == FIELDS
    assert tuple(SCHEMA["properties"]) == FIELDS


def producer_accepts(event: dict[str, Any]) -> bool:
    try:
        check_event(event, now_s=NOW_S, max_future_s=MAX_FUTURE_S, max_text_chars=MAX_TEXT_CHARS)
    except (RejectedEvent, TypeError):
        return False
    return True


# --- values near every bound of the rules, of every JSON type ---


def _sized(sizes: list[int], alphabet: str | None = None) -> st.SearchStrategy[str]:
    """Strings of exactly these lengths (code points), multi-byte ones included. No lone
    surrogates: a JSON string may escape one, but it is no character and no schema
    keyword excludes it (the producer rejects it: invalid_utf8, tested below)."""
    chars = st.characters(codec="utf-8") if alphabet is None else st.sampled_from(alphabet)
    return st.sampled_from(sizes).flatmap(lambda n: st.text(chars, min_size=n, max_size=n))


_texts = st.one_of(
    _sized([0, 1, 2, 127, 128, 129, MAX_TEXT_CHARS - 1, MAX_TEXT_CHARS, MAX_TEXT_CHARS + 1]),
    _sized([127, 128, 129], "aé😀"),
    st.sampled_from(["", " ", "\n", "\x00", "Code", "12.5", "true"]),
)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-2, max_value=90_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1.0, max_value=2e-300, allow_nan=False),
    st.sampled_from([
        0, 0.0, -0.0, 5e-324, 86_400, 86_400.0, 86_400.00000000001, math.nextafter(86_400, 0),
        NOW_S + MAX_FUTURE_S, math.nextafter(NOW_S + MAX_FUTURE_S, math.inf),
        int(NOW_S + MAX_FUTURE_S), int(NOW_S + MAX_FUTURE_S) + 1, 10**64, 10**65, 1e300,
        MAX_INTEGER, MAX_INTEGER + 1, 3.0, 3.5, 1e18, -1,
    ]),
)  # fmt: skip
_digits = st.text(alphabet="0123456789", min_size=1, max_size=4)
_dates = st.one_of(
    st.sampled_from([f"{y:04d}-02-29" for y in (0, 1900, 2000, 2023, 2024, 2100, 2400, 9996)]),
    st.builds(
        lambda y, m, d, tail: f"{y:04d}-{m:02d}-{d:02d}{tail}",
        st.integers(0, 9999) | st.sampled_from([0, 1900, 2000, 2023, 2024, 2100, 2400]),
        st.integers(0, 13) | st.just(2),
        st.integers(0, 32) | st.sampled_from([28, 29, 30, 31]),
        st.sampled_from(
            [
                "",
                "",
                "T10:00:00Z",
                "t10:00:00.123+09:00",
                " 10:00:00-05:00",
                "T10:00Z",
                "\n",
                "x",
                "T10:00:00+0900",
                "T99:99:99z",
                "T10:00:00.Z",
            ]
        ),
    ),
    st.builds(lambda a, b: f"{a}-{b}", _digits, _digits),
    st.text(alphabet="0123456789-T:Z+١", max_size=12),
)
_object_ids = st.one_of(
    _sized([23, 24, 25], "0123456789abcdefABCDEFg"),
    st.sampled_from(["", "0" * 24 + "\n", "٠" * 24]),
)
_json_scalars = st.one_of(st.none(), st.booleans(), _numbers, _texts)
_json_values = _json_scalars | st.lists(st.integers(), max_size=1) | st.just({})


def _typed(name: str) -> st.SearchStrategy[Any]:
    """Values of a field's own JSON type near its bounds, mostly; sometimes anything."""
    kind = FIELD_TYPES[name]
    own: st.SearchStrategy[Any] = {
        "string": _texts,
        "number": _numbers,
        "integer": _numbers,
        "boolean": st.booleans(),
    }[kind]
    if name == "sessionDate":
        own = _dates
    elif name in ("categorizedDataId", "pomodoroUsageLogId"):
        own = _object_ids
    return st.one_of(own, own, own, st.none(), _json_values)


_valid: dict[str, st.SearchStrategy[Any]] = {
    "userId": st.text(min_size=1, max_size=128),
    "app": st.text(max_size=MAX_TEXT_CHARS),
    "title": st.text(max_size=MAX_TEXT_CHARS),
    "url": st.text(max_size=MAX_TEXT_CHARS),
    "duration": st.floats(min_value=1e-9, max_value=86_400) | st.integers(1, 86_400),
    "timestamp": st.floats(min_value=0, max_value=NOW_S + MAX_FUTURE_S)
    | st.integers(0, int(NOW_S)),
    "session": st.integers(0, MAX_INTEGER),
    "sessionDate": st.dates().map(str),
    "sessionMinutes": st.integers(0, MAX_INTEGER),
    "isEnd": st.booleans(),
    "categorizedDataId": st.text(alphabet="0123456789abcdefABCDEF", min_size=24, max_size=24),
    "pomodoroUsageLogId": st.text(alphabet="0123456789abcdef", min_size=24, max_size=24),
}


@st.composite
def json_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event (most fields present), then one or two fields set to any value of
    the strategies above or left out: most examples sit one step from the accepted set."""
    event: dict[str, Any] = {}
    for name in FIELDS:
        required = name in ("userId", "duration", "timestamp", "app")
        if required or draw(st.integers(0, 9)) < 6:
            event[name] = draw(_valid[name])
    if event.get("isEnd") is True and "session" not in event:
        event["session"] = draw(_valid["session"])
    names = st.sampled_from([*FIELDS, "source", "", "userid"])
    for name in draw(st.lists(names, min_size=1, max_size=2, unique=True)):
        if name in FIELD_TYPES and draw(st.integers(0, 4)) == 0:
            event.pop(name, None)
        else:
            event[name] = draw(_typed(name) if name in FIELD_TYPES else _json_values)
    return event


def _holds_a_wire_string(event: dict[str, Any]) -> bool:
    """A string in a number, integer or boolean field: the wire form, which the consumer
    parses (and so the producer accepts) but the schema, asking for JSON types, does not."""
    return any(
        isinstance(event.get(name), str) and kind != "string" for name, kind in FIELD_TYPES.items()
    )


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_events())
@example({"userId": "u", "app": "a", "duration": 1, "timestamp": 0})
@example({"userId": "u", "url": "x", "duration": 86_400.0, "timestamp": NOW_S + MAX_FUTURE_S})
@example({"userId": "u", "title": "t", "duration": 1, "timestamp": 1, "isEnd": True})
@example({"userId": "u", "title": "t", "duration": 1, "timestamp": 1, "isEnd": True,
          "session": 0, "sessionDate": "2024-02-29T23:59:59.5+09:00"})  # fmt: skip
@example({"userId": "u", "app": "a", "duration": 1, "timestamp": 1, "sessionDate": "2100-02-29"})
@example({"userId": "u", "app": "a", "duration": 1, "timestamp": 1, "session": 3.0})
@example({"userId": "u", "app": "", "title": None, "duration": 1, "timestamp": 1})
def test_schema_and_validator_agree(event: dict[str, Any]) -> None:
    by_schema = VALIDATOR.is_valid(event)
    by_producer = producer_accepts(event)
    note_event("accepted" if by_producer else "rejected")  # --hypothesis-show-statistics
    if _holds_a_wire_string(event):
        assert not by_schema
    else:
        assert by_schema == by_producer, (by_schema, by_producer, event)


@given(json_events())
@settings(max_examples=500, deadline=None)
def test_stream_fields_are_what_the_consumer_reads(event: dict[str, Any]) -> None:
    """An accepted event's fields parse to the same Event in the consumer as in the
    producer's check: the consumer sees nothing the producer did not check."""
    try:
        fields, parsed = check_event(
            event, now_s=NOW_S, max_future_s=MAX_FUTURE_S, max_text_chars=MAX_TEXT_CHARS
        )
    except (RejectedEvent, TypeError):
        return
    later = parse_checked(
        "1-0", fields, now_s=NOW_S + 3600, max_future_s=MAX_FUTURE_S, max_text_chars=MAX_TEXT_CHARS
    )
    assert later._replace(entry_id="") == parsed


@pytest.mark.parametrize(
    ("value", "field", "written"),
    [
        (True, "isEnd", b"true"),
        (False, "isEnd", b"false"),
        (12.5, "duration", b"12.5"),
        (1e-7, "duration", b"1e-07"),
        (1_770_000_000, "timestamp", b"1770000000"),
        (3.0, "session", b"3"),
        ("héllo", "title", "héllo".encode()),
        (b"\xff", "title", b"\xff"),  # bytes as they are: the consumer judges them
        ("12.5", "duration", b"12.5"),  # the wire form
        (7, "extra", b"7"),
    ],
)
def test_stream_field_values(value: Any, field: str, written: bytes) -> None:
    assert stream_fields({field: value}) == {field.encode(): written}


@pytest.mark.parametrize(
    ("field", "value"),
    [("userId", 42), ("duration", True), ("isEnd", 1), ("x", [1]), ("x", {})],
)
def test_values_of_another_type_are_type_errors(field: str, value: Any) -> None:
    with pytest.raises(TypeError, match=field):
        stream_fields({field: value})


def test_none_is_left_out_and_reasons_are_the_consumers() -> None:
    assert stream_fields({"app": None, "userId": "u"}) == {b"userId": b"u"}
    with pytest.raises(RejectedEvent) as info:
        check_event({"app": "a", "duration": 1, "timestamp": 1}, now_s=NOW_S)
    assert (info.value.reason, info.value.field) == (MISSING_FIELD, "userId")
    with pytest.raises(RejectedEvent) as info:
        check_event({"userId": "\udc80", "app": "a", "duration": 1, "timestamp": 1})
    assert (info.value.reason, info.value.field) == ("invalid_utf8", "userId")
    with pytest.raises(RejectedEvent) as info:  # a number, but not an integer: the consumer's
        check_event({"userId": "u", "app": "a", "duration": 1, "timestamp": 1, "session": 2.5})
    assert (info.value.reason, info.value.field) == ("invalid_number", "session")
