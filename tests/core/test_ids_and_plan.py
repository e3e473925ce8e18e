"""Deterministic ids and the commit plan (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pomocore.core.events import Event
from pomocore.core.ids import categorized_data_id, stream_tag, usage_log_id
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.sinks import plan as plan_module
from pomocore.sinks.commit import amounts, script_arguments
from pomocore.sinks.plan import DeadLetter, IncrementBuilder, merge_blocks

TS = 1_795_316_733.0  # 2026-11-22 12:05 in Seoul


def ev(entry_id: str, user: str, duration: float, **kw: object) -> Event:
    return Event(entry_id, user, "Code", "t", "", duration, TS, **kw)  # type: ignore[arg-type]


def test_ids_are_deterministic_and_distinct() -> None:
    tag = stream_tag("pattern_match_stream")
    assert usage_log_id(tag, "1795316733412-5") == usage_log_id(tag, "1795316733412-5")
    assert usage_log_id(tag, "1795316733412-5") != usage_log_id(tag, "1795316733412-6")
    assert usage_log_id(tag, "1795316733412-5") != usage_log_id(
        stream_tag("other"), "1795316733412-5"
    )
    assert usage_log_id(tag, "1795316733412-5").generation_time.timestamp() == 1795316733
    huge = usage_log_id(tag, f"1795316733412-{1 << 30}")  # falls back to a hash, still stable
    assert huge == usage_log_id(tag, f"1795316733412-{1 << 30}")
    assert categorized_data_id("a", "b", "c") == categorized_data_id("a", "b", "c")
    assert categorized_data_id("a", "bc", "") != categorized_data_id("ab", "c", "")


def test_plan_aggregates_per_key_and_user_with_work_keys() -> None:
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    plan = builder.plan(
        [
            (ev("1-0", "u1", 10.0), "Development"),
            (ev("1-1", "u1", 5.5), "Development"),
            (ev("1-2", "u2", 3.0), "SNS"),
        ],
        [DeadLetter("1-3", {b"x": b"y"}, "missing_field", "userId")],
    )
    assert plan.ids == ["1-0", "1-1", "1-2", "1-3"]
    assert plan.increments == {
        "leaderboard:Development:2026-11-22": {"u1": 15.5},
        "leaderboard:Development:2026-W47": {"u1": 15.5},
        "leaderboard:Development:2026-M11": {"u1": 15.5},
        "leaderboard:work:2026-11-22": {"u1": 15.5},
        "leaderboard:work:2026-W47": {"u1": 15.5},
        "leaderboard:work:2026-M11": {"u1": 15.5},
        "leaderboard:SNS:2026-11-22": {"u2": 3.0},
        "leaderboard:SNS:2026-W47": {"u2": 3.0},
        "leaderboard:SNS:2026-M11": {"u2": 3.0},
    }
    assert plan.increment_count == 9


def test_session_end_uses_session_date_or_local_date() -> None:
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    plan = builder.plan(
        [
            (ev("1-0", "u1", 1.0, is_end=True, session=3, session_date="2026-11-20"), "SNS"),
            (ev("1-1", "u2", 1.0, is_end=True, session=4), "SNS"),
            (ev("1-2", "u3", 1.0, session=5), "SNS"),
        ],
        [],
    )
    assert plan.sessions == [("u1", "2026-11-20", 3), ("u2", "2026-11-22", 4)]


def test_script_arguments_layout() -> None:
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    plan = builder.plan(
        [(ev("1-0", "u1", 0.1), "SNS")], [DeadLetter("1-1", {b"a": b"b"}, "too_long", "title")]
    )
    keys, argv = script_arguments(plan, KeySpace(), "g", "c")
    assert keys[:4] == [
        "pattern_match_stream",
        "pattern_match_stream:dlq",
        "session_score_stream",
        "pomocore:derived:leaderboard:stale",
    ]
    # 0: exact mode, days not marked; one segment: consumer c, 2 ids
    assert argv[:7] == ["g", 0, 1, "c", 2, "1-0", "1-1"]
    assert argv[7] == 1 and argv[8] == 14  # one dead letter of 7 field/value pairs
    assert argv[9:11] == [b"a", b"b"]
    assert b"dlq.reason" in argv and b"too_long" in argv
    # one block: 3 keys, 1 pair (the shortest text of the double); then each key's expire-at
    # (0 = never)
    assert argv[-8:] == [1, 3, 1, "u1", b"0.1", 0, 0, 0]
    _, with_ttl = script_arguments(plan, KeySpace(), "g", "c", lambda key: len(key))
    assert with_ttl[-3:] == [len(k) for k in keys[4:]]
    _, derived = script_arguments(plan, KeySpace(), "g", "c", mark_derived=True)
    assert derived[1] == 1


DAY = 86_400.0


def test_keys_fed_by_the_same_groups_share_one_block() -> None:
    """A category's keys of one day form a block; keys fed by several (category, day)
    groups (the `work` keys, a week spanning two days) get the merged sums once."""
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    rows = [
        ("1-0", "u1", 10.0, TS, "Development"),
        ("1-1", "u1", 4.0, TS, "Documentation"),
        ("1-2", "u2", 3.0, TS, "SNS"),
        ("1-3", "u1", 1.0, TS - DAY, "Development"),  # Saturday 2026-11-21, same week
    ]
    accepted = [(Event(i, u, "a", "t", "", d, ts), c) for i, u, d, ts, c in rows]
    blocks = {keys: dict(users) for keys, users in builder.plan(accepted, []).blocks}
    assert blocks == {
        ("leaderboard:Development:2026-11-22",): {"u1": 10.0},
        ("leaderboard:Development:2026-W47", "leaderboard:Development:2026-M11"): {"u1": 11.0},
        ("leaderboard:work:2026-11-22",): {"u1": 14.0},
        ("leaderboard:work:2026-W47", "leaderboard:work:2026-M11"): {"u1": 15.0},
        ("leaderboard:Documentation:2026-11-22", "leaderboard:Documentation:2026-W47",
         "leaderboard:Documentation:2026-M11"): {"u1": 4.0},
        ("leaderboard:SNS:2026-11-22", "leaderboard:SNS:2026-W47",
         "leaderboard:SNS:2026-M11"): {"u2": 3.0},
        # only Development fed work on Saturday: one block
        ("leaderboard:Development:2026-11-21", "leaderboard:work:2026-11-21"): {"u1": 1.0},
    }  # fmt: skip
    keys = [k for block in blocks for k in block]
    assert len(keys) == len(set(keys))  # a key is in exactly one block


def test_derived_mode_increments_daily_keys_only() -> None:
    events = [(ev("1-0", "u1", 1.5), "Development"), (ev("1-1", "u2", 2.0), "SNS")]
    exact = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul")).plan(events, [])
    derived = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"), derived=True).plan(
        events, []
    )
    assert len(exact.increments) == 9  # Development and work: 3 + 3; SNS: 3
    assert sorted(derived.increments) == sorted(k for k in exact.increments if k.count("-") == 2)
    assert len(derived.increments) == 3  # the daily keys of Development, work and SNS
    for key, users in derived.increments.items():
        assert users == exact.increments[key]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from(["Development", "SNS", "Design", "Music"]),
            st.floats(min_value=0.001, max_value=86_400),
            st.floats(min_value=1.7e9, max_value=1.7e9 + 40 * 86_400),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_plan_sums_equal_event_by_event_sums(
    rows: list[tuple[str, str, float, float]], derived: bool
) -> None:
    """Grouping by (category, day) first changes nothing but float rounding."""
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"), derived=derived)
    accepted = [
        (Event(f"{i}-0", user, "a", "t", "", dur, ts), cat)
        for i, (user, cat, dur, ts) in enumerate(rows)
    ]
    expected: dict[str, dict[str, float]] = {}
    for event, cat in accepted:
        for key in builder.leaderboard_keys(cat, event.timestamp_s):
            users = expected.setdefault(key, {})
            users[event.user_id] = users.get(event.user_id, 0.0) + event.duration_s
    plan = builder.plan(accepted, [])
    assert plan.ids == [e.entry_id for e, _ in accepted]
    assert set(plan.increments) == set(expected)
    for key, users in expected.items():
        assert set(plan.increments[key]) == set(users)
        for user, total in users.items():
            assert abs(plan.increments[key][user] - total) <= 1e-9 * max(1.0, total)


def _plan_event_by_event(
    builder: IncrementBuilder, accepted: list[tuple[Event, str]]
) -> tuple[list[str], list[tuple[str, str, int]], list[tuple[tuple[str, ...], list[object]]]]:
    """The plan as the loop before plan_events built it, one event at a time: ids,
    sessions, and the blocks with their sums in order (the reference for the columns)."""
    groups: dict[tuple[str, ...], dict[str, float]] = {}
    ids, sessions = [], []
    for event, category in accepted:
        ids.append(event.entry_id)
        sums = groups.setdefault(builder.leaderboard_keys(category, event.timestamp_s), {})
        sums[event.user_id] = sums.get(event.user_id, 0.0) + event.duration_s
        if event.is_end and event.session is not None:
            date = event.session_date or builder.periods(event.timestamp_s).daily
            sessions.append((event.user_id, date, event.session))
    blocks = merge_blocks(list(groups.items()))
    return ids, sessions, [(keys, [(u, x.hex()) for u, x in s.items()]) for keys, s in blocks]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from(["Development", "SNS", "Design", "Music"]),
            st.floats(min_value=0.001, max_value=86_400),
            st.floats(min_value=1.7e9, max_value=1.7e9 + 40 * 86_400),
            st.sampled_from([(False, None, None), (True, 3, None), (True, 4, "2026-11-20"),
                             (True, None, None)]),
        ),
        max_size=60,
    ),
)  # fmt: skip
def test_plan_in_columns_is_the_event_by_event_plan(
    rows: list[tuple[str, str, float, float, tuple[bool, int | None, str | None]]],
) -> None:
    """The same ids, sessions, blocks in the same order and sums to the bit."""
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    accepted = [
        (Event(f"{i}-0", user, "a", "t", "", dur, ts, session, date, None, end), cat)
        for i, (user, cat, dur, ts, (end, session, date)) in enumerate(rows)
    ]
    plan = builder.plan(accepted, [DeadLetter("9-9", {}, "too_long")])
    ids, sessions, blocks = _plan_event_by_event(builder, accepted)
    assert plan.ids == [*ids, "9-9"]
    assert plan.sessions == sessions
    assert [(k, [(u, x.hex()) for u, x in s.items()]) for k, s in plan.blocks] == blocks


def test_plan_reads_event_fields_by_position() -> None:
    """sinks/plan.py picks Event fields with itemgetter: pin the positions to the names."""
    event = Event("1-0", "u", "a", "t", "w", 1.5, 2.5, 3, "2026-11-22", 25, True)
    assert (plan_module._entry_id(event), plan_module._user_id(event)) == ("1-0", "u")
    assert (plan_module._duration(event), plan_module._timestamp(event)) == (1.5, 2.5)
    assert plan_module._is_end(event) is True


@settings(max_examples=500, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=8))
def test_amounts_read_back_as_the_same_doubles(values: list[float]) -> None:
    """What the commit script gets for each sum: text that Lua and ZINCRBY (strtod) read
    back as the same double, bit for bit."""
    texts = amounts(values)
    assert all(isinstance(t, bytes) for t in texts)
    assert [float(t).hex() for t in texts] == [v.hex() for v in values]


def test_keys_of_one_category_and_day_are_one_tuple() -> None:
    """Buckets of one day find the same keys object (the plan groups events by its id);
    another day or category, other keys."""
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    morning = builder.leaderboard_keys("Development", TS - 3 * 3600)
    assert builder.leaderboard_keys("Development", TS) is morning
    assert builder.leaderboard_keys("Development", TS + 900) is morning
    assert builder.leaderboard_keys("Development", TS - DAY) != morning
    assert builder.leaderboard_keys("SNS", TS) != morning
    assert morning == (
        "leaderboard:Development:2026-11-22", "leaderboard:Development:2026-W47",
        "leaderboard:Development:2026-M11", "leaderboard:work:2026-11-22",
        "leaderboard:work:2026-W47", "leaderboard:work:2026-M11",
    )  # fmt: skip
