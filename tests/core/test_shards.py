"""Shard placement (core/shards.py): pure functions, no servers."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomocore.core.errors import ConfigError
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.core.shards import (
    CLUSTER_SLOTS,
    MAX_SHARDS,
    key_slot,
    parse_shard_list,
    shard_of,
    shard_of_field,
    shard_slot_range,
    shard_tag,
)


@pytest.mark.parametrize(
    ("user", "shards", "expected"),
    [
        ("alice", 1, 0),
        # crc32(b"alice") = 0x278EBC47 = 663665735 (zlib, Go hash/crc32, Java CRC32)
        ("alice", 6, 5),
        ("", 6, 0),
        ("사용자", 7, zlib.crc32("사용자".encode()) % 7),
    ],
)
def test_shard_of_is_crc32_of_the_utf8_user_id(user: str, shards: int, expected: int) -> None:
    assert shard_of(user, shards) == expected


@pytest.mark.parametrize(
    ("raw", "shards", "expected"),
    [
        (b"u42", 6, 4),  # crc32(b"u42") = 3733377502: docs/contract.md's check value
        (b"u42", 1, 0),
        (None, 6, 0),  # no userId: shard 0, whose consumer dead-letters it
        (b"", 6, 0),
        (b"\xff\xfe", 6, 0),  # not UTF-8: the same
    ],
)
def test_shard_of_a_raw_field(raw: bytes | None, shards: int, expected: int) -> None:
    assert shard_of_field(raw, shards) == expected


@given(st.text(min_size=1, max_size=64), st.integers(1, MAX_SHARDS))
def test_shard_of_a_field_is_the_shard_of_its_text(user: str, shards: int) -> None:
    try:
        raw = user.encode()
    except UnicodeEncodeError:  # a lone surrogate: no producer can send it
        return
    assert shard_of_field(raw, shards) == shard_of(user, shards)


@given(st.text(max_size=64), st.integers(1, MAX_SHARDS))
def test_shard_of_is_in_range_and_stable(user: str, shards: int) -> None:
    shard = shard_of(user, shards)
    assert 0 <= shard < shards
    assert shard_of(user, shards) == shard


def test_key_slot_matches_the_cluster_spec_examples() -> None:
    # CLUSTER KEYSLOT of these names on a real server (Redis docs: "somekey" → 11058)
    assert key_slot("somekey") == 11058
    assert key_slot("foo") == 12182


@pytest.mark.parametrize("shards", [2, 3, 6, 12, 64, MAX_SHARDS])
def test_each_shard_sits_in_the_middle_half_of_its_slot_range(shards: int) -> None:
    slots = []
    for shard in range(shards):
        lo, hi = shard_slot_range(shard, shards)
        slot = key_slot(shard_tag(shard, shards))
        quarter = (hi - lo) // 4
        assert lo + quarter <= slot < max(hi - quarter, lo + quarter + 1)
        slots.append(slot)
    assert slots == sorted(slots)  # distinct and in order: no two shards share a slot


@pytest.mark.parametrize(("shards", "masters"), [(3, 3), (6, 3), (12, 3), (8, 4), (6, 2)])
def test_shards_spread_evenly_over_masters_cut_as_cluster_create_does(
    shards: int, masters: int
) -> None:
    def master_of(slot: int) -> int:
        return next(m for m in range(masters) if slot < (m + 1) * CLUSTER_SLOTS // masters)

    per_master = [0] * masters
    for shard in range(shards):
        per_master[master_of(key_slot(shard_tag(shard, shards)))] += 1
    assert per_master == [shards // masters] * masters


def test_naive_tags_would_not_spread() -> None:
    """Why the search: `{0}`…`{5}` leave one of three masters with a single shard."""
    masters = [key_slot(str(i)) * 3 // CLUSTER_SLOTS for i in range(6)]
    assert sorted(masters.count(m) for m in range(3)) != [2, 2, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", (0, 1, 2, 3, 4, 5)), ("0-2,5", (0, 1, 2, 5)), (" 3 ", (3,)), ("1,1,0-1", (0, 1))],
)
def test_shard_lists(text: str, expected: tuple[int, ...]) -> None:
    assert parse_shard_list(text, 6, "X") == expected


@pytest.mark.parametrize("text", ["6", "a", "2-1", "-1", "0-9"])
def test_bad_shard_lists_name_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="POMOCORE_CONSUMER_SHARDS"):
        Settings.from_env({"POMOCORE_SHARDS": "6", "POMOCORE_CONSUMER_SHARDS": text})


def test_one_shard_keeps_the_contract_keys() -> None:
    settings = Settings.from_env({})
    assert settings.shard_keys(0) == settings.keys == KeySpace()
    assert settings.all_shard_keys == (KeySpace(),)
    assert settings.keys.stream_key == "pattern_match_stream"


def test_a_shard_owns_its_keys_and_shares_the_rest() -> None:
    settings = Settings.from_env({"POMOCORE_SHARDS": "6", "POMOCORE_KEY_HASH_TAG": "pomo"})
    keys = settings.shard_keys(4)
    tag = "{" + shard_tag(4, 6) + "}"
    owned = [
        keys.stream_key,
        keys.dead_letter_key,
        keys.session_score_key,
        keys.leaderboard("work", "2026-11-30"),
        keys.derived_stale_key,
        keys.derived_lock_key,
        keys.lost_to_trim_key,
    ]
    assert all(k.startswith(tag) for k in owned)
    shared = [keys.patterns_version_key, keys.llm_rate_key_prefix, keys.llm_queue_key]
    assert all(k.startswith("{pomo}") for k in shared)
    assert len({settings.shard_keys(i).stream_key for i in range(6)}) == 6


def test_a_stream_name_whose_shards_share_a_usage_log_tag_is_refused() -> None:
    """Shards' streams repeat each other's entry ids: derived usage-log ids would collide
    (one event's log silently skipped as a duplicate) if two streams shared the 3-byte tag.
    `s1289` is such a name for 256 shards (found by search)."""
    with pytest.raises(ConfigError, match="POMOCORE_STREAM"):
        Settings.from_env({"POMOCORE_SHARDS": "256", "POMOCORE_STREAM": "s1289"})
    Settings.from_env({"POMOCORE_SHARDS": "256"})  # the default name is fine for every N
