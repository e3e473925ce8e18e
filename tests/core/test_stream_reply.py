"""The consumer reads XREADGROUP's raw reply (no dict per entry): every shape it can take."""

from __future__ import annotations

from typing import Any

import pytest

from pomocore.consumers.consumer import stream_entries

FLAT = [b"userId", b"u1", b"app", b"Code"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (None, []),  # BLOCK timed out
        ([], []),
        ({b"s": []}, []),  # RESP3, nothing pending
        ([[b"s", [[b"1-0", FLAT], [b"1-1", None]]]], [("1-0", FLAT), ("1-1", None)]),  # RESP2
        ({b"s": [[b"1-0", FLAT], [b"2-0", []]]}, [("1-0", FLAT), ("2-0", None)]),  # RESP3
        ([[b"s", [(b"1-0", {b"userId": b"u1"})]]], [("1-0", {b"userId": b"u1"})]),  # redis-py
    ],
)
def test_stream_entries(reply: Any, expected: list[Any]) -> None:
    assert stream_entries(reply) == expected
