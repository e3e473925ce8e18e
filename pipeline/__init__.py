"""pomocore: Redis Stream activity events → categories → MongoDB and Redis leaderboards.

The small public API; everything else is internal.
"""

from pipeline.errors import (
    Backpressure,
    ClassifierError,
    CommitError,
    ConfigError,
    MongoWriteError,
    PomocoreError,
    RejectedEvent,
    SinkError,
)
from pipeline.keys import KeySpace
from pipeline.settings import Settings

__all__ = [
    "Backpressure",
    "ClassifierError",
    "CommitError",
    "ConfigError",
    "KeySpace",
    "MongoWriteError",
    "PomocoreError",
    "RejectedEvent",
    "Settings",
    "SinkError",
]
