"""Driver errors translated at the command line's edge (shell/exits.py): a table of
exceptions and what an operator is told."""

from __future__ import annotations

import io

import pymongo.errors
import pytest
import redis.exceptions

from pomocore import exits
from pomocore.core.errors import BackendUnavailable, ClassifierError, ConfigError

REDIS = "redis://app:s3cret@cache:6379/0"
MONGO = "mongodb://app:s3cret@db:27017/?authSource=admin"


def caused(outer: Exception, cause: Exception) -> Exception:
    outer.__cause__ = cause
    return outer


# (exception, class of the translation, its message) — None: not ours to translate.
CASES = [
    (
        redis.exceptions.ConnectionError("Error 111 connecting to cache:6379. Connection refused."),
        BackendUnavailable,
        "Redis unavailable at redis://app:***@cache:6379/0: Error 111 connecting to cache:6379. "
        "Connection refused.",
    ),
    (
        redis.exceptions.TimeoutError("Timeout connecting to server"),
        BackendUnavailable,
        "Redis unavailable at redis://app:***@cache:6379/0: Timeout connecting to server",
    ),
    (
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        ConfigError,
        "POMOCORE_REDIS_URL: Redis at redis://app:***@cache:6379/0 refused the credentials: "
        "invalid username-password pair",
    ),
    (
        redis.exceptions.NoPermissionError(
            "this user has no permissions to run the 'xadd' command"
        ),
        ConfigError,
        "POMOCORE_REDIS_URL: the user of Redis at redis://app:***@cache:6379/0 may not: this user "
        "has no permissions to run the 'xadd' command",
    ),
    (
        pymongo.errors.ServerSelectionTimeoutError(
            "db:27017: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: "
            "20000.0ms), Timeout: 3.0s, Topology Description: <TopologyDescription ...>"
        ),
        BackendUnavailable,
        "MongoDB unavailable at mongodb://app:***@db:27017/?authSource=admin: db:27017: "
        "[Errno 111] Connection refused",
    ),
    (  # our error wrapping a driver's (classifiers/store.py): the cause decides
        caused(
            ClassifierError("cannot read category_patterns: ..."),
            pymongo.errors.ServerSelectionTimeoutError("db:27017: timed out"),
        ),
        BackendUnavailable,
        "MongoDB unavailable at mongodb://app:***@db:27017/?authSource=admin: db:27017: timed out",
    ),
    (
        pymongo.errors.OperationFailure("Authentication failed.", code=18),
        ConfigError,
        "POMOCORE_MONGO_URI: MongoDB at mongodb://app:***@db:27017/?authSource=admin refused "
        "the credentials",
    ),
    (ConfigError("POMOCORE_X", "bad"), ConfigError, "POMOCORE_X: bad"),
    (redis.exceptions.ResponseError("WRONGTYPE ..."), None, ""),
    (ClassifierError("bad pattern"), None, ""),
    (ValueError("a bug"), None, ""),
]


@pytest.mark.parametrize(("exc", "kind", "message"), CASES)
def test_translation(exc: Exception, kind: type[Exception] | None, message: str) -> None:
    found = exits.translate(exc, REDIS, MONGO)
    if kind is None:
        assert found is None
        return
    assert isinstance(found, kind)
    assert str(found) == message
    assert "s3cret" not in str(found)


def test_report_is_one_line_with_the_exit_code() -> None:
    err = io.StringIO()
    assert exits.report(BackendUnavailable.at("Redis", "redis://cache:6379/0", "refused"), err) == 3
    assert err.getvalue() == "pomocore: Redis unavailable at redis://cache:6379/0: refused\n"
    err = io.StringIO()
    assert exits.report(ConfigError("POMOCORE_BATCH_SIZE", "too big"), err) == 2
    assert err.getvalue() == "pomocore: configuration error: POMOCORE_BATCH_SIZE: too big\n"
