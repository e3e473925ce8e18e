"""pomocore: Redis Stream activity events → categories → MongoDB and Redis leaderboards.

The public API is what `__all__` lists (pinned by tests/test_public_api.py); every other
module is internal and may change between releases. The layers below it, each one
subpackage: `pomocore.core` (settings, keys, the event, periods, errors),
`pomocore.classifiers`, `pomocore.sinks`, `pomocore.consumers`.
"""

from pomocore.core.errors import (
    BackendError,
    BackendUnavailable,
    Backpressure,
    ClassifierError,
    CommitError,
    ConfigError,
    MongoWriteError,
    PomocoreError,
    RejectedEvent,
    SinkError,
)
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.producer import apublish, apublish_many, publish, publish_many
from pomocore.reader import AsyncLeaderboardReader, LeaderboardReader, Period, QueryError, Row

__version__ = "0.1.0"

__all__ = [
    "AsyncLeaderboardReader",
    "BackendError",
    "BackendUnavailable",
    "Backpressure",
    "ClassifierError",
    "CommitError",
    "ConfigError",
    "KeySpace",
    "LeaderboardReader",
    "MongoWriteError",
    "Period",
    "PomocoreError",
    "QueryError",
    "RejectedEvent",
    "Row",
    "Settings",
    "SinkError",
    "__version__",
    "apublish",
    "apublish_many",
    "publish",
    "publish_many",
]
