"""Exit codes of `pomocore`, and driver errors translated into ours at the command's edge.

    0  ok (`status`: healthy)
    1  a check failed, or what was asked for is not there (`status`: unhealthy,
       `rebuild --check`: differences, `patterns check`: errors, `leaderboard rank`: no
       such user, `patterns learned --approve`: no such pattern)
    2  usage or configuration error: the message names the option or setting
    3  a backend (Redis, MongoDB) is unavailable: one line naming the server (its address
       without the password), never a traceback

`pomocore check` keeps the 0/1 of a probe (Docker's HEALTHCHECK reads 1 as unhealthy
and reserves 2).
A redis-py or pymongo exception that escapes a command is looked up here, along its
`__cause__` chain (our errors wrap driver errors, e.g. ClassifierError): a connection
failure becomes BackendUnavailable, refused credentials or a missing ACL permission a
ConfigError naming the setting that holds the address.
"""

from __future__ import annotations

import os
from typing import TextIO

import pymongo.errors
import redis.exceptions

from pomocore.core.errors import BackendUnavailable, ConfigError, PomocoreError
from pomocore.core.settings import Settings, redact
from pomocore.health import redact_text

OK = 0
FAILED = 1
USAGE = 2
UNAVAILABLE = 3

# MongoDB's error code for refused credentials (AuthenticationFailed).
MONGO_AUTH_FAILED = 18
DETAIL_CHARS = 160
REDIS_SETTING = "POMOCORE_REDIS_URL"
MONGO_SETTING = "POMOCORE_MONGO_URI"


def addresses() -> tuple[str, str]:
    """The Redis URL and MongoDB URI a command was configured with (for messages)."""
    try:
        settings = Settings.from_env()
    except PomocoreError:  # a bad setting elsewhere: the raw variables still name the servers
        defaults = Settings()
        return (
            os.environ.get(REDIS_SETTING, defaults.redis_url),
            os.environ.get(MONGO_SETTING, defaults.mongo_uri),
        )
    return settings.redis_url, settings.mongo_uri


def translate(exc: BaseException, redis_url: str, mongo_uri: str) -> PomocoreError | None:
    """BackendUnavailable or ConfigError for a failure to use a backend; None for anything
    else (a bug keeps its traceback)."""
    chain = _chain(exc)
    # The driver's error first: it names the server by the URL the operator set (a
    # reader's or producer's BackendUnavailable names only host:port).
    for cause in chain:
        found = _translate_one(cause, redact(redis_url), redact(mongo_uri))
        if found is not None:
            return found
    return next((c for c in chain if isinstance(c, BackendUnavailable | ConfigError)), None)


def _chain(exc: BaseException, limit: int = 8) -> list[BaseException]:
    """`exc` and its causes (explicit or implicit), at most `limit`."""
    out: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(out) < limit:
        out.append(cause)
        cause = cause.__cause__ or cause.__context__
    return out


def _translate_one(exc: BaseException, redis_at: str, mongo_at: str) -> PomocoreError | None:
    detail = _detail(exc)
    # AuthenticationError is a ConnectionError in redis-py: it must be tested first.
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return ConfigError(REDIS_SETTING, f"Redis at {redis_at} refused the credentials: {detail}")
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return ConfigError(REDIS_SETTING, f"the user of Redis at {redis_at} may not: {detail}")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return BackendUnavailable.at("Redis", redis_at, detail)
    if isinstance(exc, redis.exceptions.RedisClusterException) and "connected" in str(exc):
        return BackendUnavailable.at("Redis", redis_at, detail)  # no cluster node answered
    if isinstance(exc, pymongo.errors.OperationFailure) and exc.code == MONGO_AUTH_FAILED:
        return ConfigError(MONGO_SETTING, f"MongoDB at {mongo_at} refused the credentials")
    if isinstance(exc, pymongo.errors.ConnectionFailure):
        return BackendUnavailable.at("MongoDB", mongo_at, detail)
    if isinstance(exc, pymongo.errors.ConfigurationError):
        return ConfigError(MONGO_SETTING, detail)
    return None


def _detail(exc: BaseException) -> str:
    """The driver's message on one short line: pymongo's carries its whole topology after
    the first reason, which an operator does not need to tell "refused" from "timed out"."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for cut in (" (configured timeouts", ", Timeout:", ", Topology Description"):
        text = text.split(cut, 1)[0]
    text = redact_text(text)
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def report(error: PomocoreError, err: TextIO) -> int:
    """One line on `err` for a translated failure; its exit code."""
    if isinstance(error, ConfigError):
        print(f"pomocore: configuration error: {error}", file=err)
        return USAGE
    print(f"pomocore: {error}", file=err)
    return UNAVAILABLE
