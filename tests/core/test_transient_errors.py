"""Errors of lower libraries that mean "the connection went away" become connection errors."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from pomocore.consumers.consumer import _closed_is_transient


async def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize(
    ("raised", "becomes_connection_error"),
    [
        (
            RuntimeError("unable to perform operation on <TCPTransport>; the handler is closed"),
            True,
        ),
        (RuntimeError("Transport is closing"), True),
        (AttributeError("'NoneType' object has no attribute 'writelines'"), True),
        (RuntimeError("something else"), False),
        (AttributeError("'Event' object has no attribute 'user'"), False),  # a real bug
    ],
)
async def test_closed_is_transient(raised: BaseException, becomes_connection_error: bool) -> None:
    expected = RedisConnectionError if becomes_connection_error else type(raised)
    with pytest.raises(expected):
        await _closed_is_transient(_raise(raised))
