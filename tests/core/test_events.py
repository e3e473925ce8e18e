"""Validation: one case per rule of CONTRACT §1 (tables of cases, no servers)."""

from __future__ import annotations

import pytest

from pomocore.consumers.batch import class_key
from pomocore.core.errors import RejectedEvent
from pomocore.core.events import Event, parse_entry

NOW = 1_795_316_733.0


def entry(**changes: bytes | str | None) -> dict[bytes, bytes]:
    base: dict[str, bytes | str | None] = {
        "userId": "u1",
        "app": "Code",
        "title": "main.py",
        "url": "",
        "duration": "12.5",
        "timestamp": str(NOW - 10),
    }
    base.update(changes)
    return {
        k.encode(): (v if isinstance(v, bytes) else v.encode())
        for k, v in base.items()
        if v is not None
    }


REJECTED = [
    # (changes, reason, field)
    ({"userId": None}, "missing_field", "userId"),
    ({"userId": ""}, "missing_field", "userId"),
    ({"userId": "x" * 129}, "too_long", "userId"),
    ({"userId": b"\xff\xfe"}, "invalid_utf8", "userId"),
    ({"app": b"Co\xc3"}, "invalid_utf8", "app"),
    ({"title": b"\xed\xa0\x80"}, "invalid_utf8", "title"),  # a UTF-16 surrogate
    ({"url": b"http://\xff"}, "invalid_utf8", "url"),
    ({"app": "", "title": "", "url": ""}, "missing_field", "app"),
    ({"app": None, "title": None, "url": None}, "missing_field", "app"),
    ({"title": "t" * 9000}, "too_long", "title"),
    ({"duration": None}, "missing_field", "duration"),
    ({"duration": "NaN"}, "not_finite", "duration"),
    ({"duration": "inf"}, "not_finite", "duration"),
    ({"duration": "-inf"}, "not_finite", "duration"),
    ({"duration": "0"}, "out_of_range", "duration"),
    ({"duration": "-5"}, "out_of_range", "duration"),
    ({"duration": "86400.001"}, "out_of_range", "duration"),
    ({"duration": "1e400"}, "not_finite", "duration"),
    ({"duration": "ten"}, "invalid_number", "duration"),
    ({"duration": "1_000"}, "invalid_number", "duration"),
    ({"duration": " 5 "}, "invalid_number", "duration"),
    ({"duration": "5\n"}, "invalid_number", "duration"),
    ({"timestamp": " 1700000000"}, "invalid_number", "timestamp"),
    ({"duration": "9" * 100}, "invalid_number", "duration"),
    ({"timestamp": None}, "missing_field", "timestamp"),
    ({"timestamp": "nan"}, "not_finite", "timestamp"),
    ({"timestamp": str(NOW + 301)}, "future_timestamp", "timestamp"),
    ({"timestamp": str(NOW * 1000)}, "future_timestamp", "timestamp"),  # milliseconds by mistake
    ({"timestamp": "-1"}, "out_of_range", "timestamp"),
    ({"session": "-1"}, "out_of_range", "session"),
    ({"session": "1.5"}, "invalid_number", "session"),
    ({"session": "abc"}, "invalid_number", "session"),
    ({"sessionMinutes": "-25"}, "out_of_range", "sessionMinutes"),
    ({"sessionDate": "2026-13-01"}, "invalid_date", "sessionDate"),
    ({"sessionDate": "2026-02-30"}, "invalid_date", "sessionDate"),
    ({"sessionDate": "22/11/2026"}, "invalid_date", "sessionDate"),
    ({"sessionDate": "2026-11-22Tnoon"}, "invalid_date", "sessionDate"),
    ({"isEnd": "maybe"}, "invalid_bool", "isEnd"),
    ({"isEnd": "true"}, "missing_field", "session"),  # a session end needs its session
    ({"categorizedDataId": "xyz"}, "invalid_object_id", "categorizedDataId"),
    ({"pomodoroUsageLogId": "0" * 23}, "invalid_object_id", "pomodoroUsageLogId"),
]


@pytest.mark.parametrize(("changes", "reason", "field"), REJECTED)
def test_rejects_with_reason(
    changes: dict[str, str | bytes | None], reason: str, field: str
) -> None:
    with pytest.raises(RejectedEvent) as info:
        parse_entry("1-0", entry(**changes), now_s=NOW)
    assert (info.value.reason, info.value.field) == (reason, field)


ACCEPTED = [
    ({}, {"duration_s": 12.5, "is_end": False}),
    ({"duration": "86400"}, {"duration_s": 86400.0}),
    ({"duration": "1e-3"}, {"duration_s": 0.001}),
    ({"timestamp": str(NOW + 299)}, {"timestamp_s": NOW + 299}),
    ({"app": "", "url": "", "title": "only a title"}, {"app": "", "title": "only a title"}),
    ({"app": "카카오톡"}, {"app": "카카오톡"}),
    ({"isEnd": "1", "session": "3"}, {"is_end": True, "session": 3}),
    ({"isEnd": "TRUE", "session": "0"}, {"is_end": True, "session": 0}),
    ({"isEnd": "0"}, {"is_end": False}),
    ({"isEnd": "false"}, {"is_end": False}),
    ({"sessionDate": "2026-11-22"}, {"session_date": "2026-11-22"}),
    ({"sessionDate": "2026-11-22T23:30:00+09:00"}, {"session_date": "2026-11-22"}),
    ({"sessionDate": "2024-02-29T00:00:00.123Z"}, {"session_date": "2024-02-29"}),
    ({"sessionMinutes": "25"}, {"session_minutes": 25}),
    (
        {"categorizedDataId": "65A1B2C3D4E5F60718293A4B"},
        {"categorized_data_id": "65a1b2c3d4e5f60718293a4b"},
    ),
    ({"unknownField": b"\xff"}, {"user_id": "u1"}),  # unknown fields are ignored, even if invalid
    ({"userId": "x" * 128}, {"user_id": "x" * 128}),
]


@pytest.mark.parametrize(("changes", "expected"), ACCEPTED)
def test_accepts(changes: dict[str, str | bytes | None], expected: dict[str, object]) -> None:
    event = parse_entry("7-1", entry(**changes), now_s=NOW)
    assert event.entry_id == "7-1"
    for name, value in expected.items():
        assert getattr(event, name) == value


def test_max_text_chars_is_configurable() -> None:
    with pytest.raises(RejectedEvent):
        parse_entry("1-0", entry(title="t" * 101), now_s=NOW, max_text_chars=100)
    assert (
        parse_entry("1-0", entry(title="t" * 100), now_s=NOW, max_text_chars=100).title == "t" * 100
    )


# --- the fast path agrees with the checked path on any input -------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pomocore.core.events import fields_dict, parse_checked, parse_plain_flat  # noqa: E402

_VALUE = st.one_of(
    st.binary(max_size=12),
    st.sampled_from(
        [
            b"",
            b"0",
            b"1",
            b"12.5",
            b"-3",
            b"1_0",
            b"nan",
            b"inf",
            b" 7",
            b"1e3",
            b"86400",
            b"86401",
            b"true",
            b"2026-11-22",
            b"\xff",
            b"x" * 130,
            str(NOW).encode(),
            str(NOW + 400).encode(),
        ]
    ),
    st.text(max_size=10).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
_NAMES = st.sampled_from(
    [
        b"userId",
        b"app",
        b"title",
        b"url",
        b"duration",
        b"timestamp",
        b"session",
        b"sessionMinutes",
        b"isEnd",
        b"sessionDate",
        b"other",
    ]
)


def _outcome(fn: object, fields: dict[bytes, bytes]) -> object:
    try:
        return fn("1-0", fields, now_s=NOW, max_text_chars=100)  # type: ignore[operator]
    except RejectedEvent as exc:
        return (exc.reason, exc.field)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_NAMES, _VALUE, max_size=9), st.booleans())
def test_fast_path_agrees_with_checked_path(fields: dict[bytes, bytes], base: bool) -> None:
    if base:  # start from a valid entry, then perturb it
        fields = {**entry(), **fields}
    # The same Event field for field, or the same (reason, field) rejection.
    assert _outcome(parse_entry, fields) == _outcome(parse_checked, fields)


def _flat_outcome(flat: list[bytes]) -> object:
    """What the consumer's validate() makes of a raw entry (flat list of names and values)."""
    from pomocore.consumers.batch import validate
    from pomocore.core.settings import Settings

    out = validate([("1-0", flat)], Settings(max_text_chars=100), NOW)
    if out.accepted:
        return out.accepted[0]
    dead = out.dead_letters[0]
    return (dead.reason, dead.field)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUE), max_size=10), st.booleans(), st.booleans())
def test_flat_entries_agree_with_dict_entries(
    pairs: list[tuple[bytes, bytes]], base: bool, odd: bool
) -> None:
    """Any order of names, repeated names (the last value wins, as in a dict), odd lists."""
    if base:
        pairs = list(entry().items()) + pairs
    flat = [x for pair in pairs for x in pair]
    if odd and flat:
        flat = flat[:-1]
    fields = fields_dict(flat)
    assert _flat_outcome(flat) == _outcome(parse_entry, fields)


def test_flat_fast_path_takes_fields_in_any_order() -> None:
    names = list(entry())
    for order in (names, names[::-1], names[2:] + names[:2]):
        flat = [x for name in order for x in (name, entry()[name])]
        event = parse_plain_flat("1-0", flat, NOW, 300.0, 8192)
        assert event is not None and event == parse_entry("1-0", entry(), now_s=NOW)


def test_class_key_picks_app_url_title() -> None:
    """pomocore.consumers.batch.class_key reads the Event tuple by position: pin it to the names."""
    event = Event("1-0", "u", "the app", "the title", "the url", 1.0, 2.0)
    assert class_key(event) == (event.app, event.url, event.title)
    assert class_key(event) == ("the app", "the url", "the title")
