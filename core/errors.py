"""Every exception pomocore raises, in one tree.

    PomocoreError
    ├── ConfigError            bad setting; start-up stops, message names the setting
    ├── RejectedEvent          one stream entry fails validation (goes to the dead-letter stream)
    ├── SinkError              a sink could not make a batch durable; nothing is acknowledged
    │   ├── MongoWriteError    MongoDB refused or failed a write (not a duplicate key)
    │   ├── DocumentChanged    a document a producer named changed between its check and
    │   │                      its guarded write; the retry's check decides
    │   └── Backpressure       a dependency asks us to slow down; carries retry_after_s
    ├── CommitError            the acknowledge-and-increment script failed
    │   └── CommitNotApplied   it applied nothing; the batch stays pending (also a SinkError:
    │       │                  the consumer holds the batch and retries it)
    │       ├── CommitContended    every attempt met an id acknowledged elsewhere
    │       └── WrongKeyType       a key the script writes holds another Redis type
    ├── ClassifierError        patterns or the classifier could not be loaded
    └── BackendError           a call to Redis or MongoDB failed (translated from the driver;
        │                      the message names the server, without a password)
        └── BackendUnavailable the server is unreachable, timed out or answered an error
                               that clears by itself (LOADING, failover...): retry later;
                               the CLI exits 3 on it

Lower-library errors (redis, pymongo, openai) are translated into these where they
cross into our code, so callers never need to import a driver to catch a failure.
"""

from __future__ import annotations


class PomocoreError(Exception):
    """Base class of every pomocore error."""


class ConfigError(PomocoreError):
    """A setting is missing or invalid. `setting` names it (e.g. POMOCORE_BATCH_SIZE)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class RejectedEvent(PomocoreError):
    """A stream entry failed validation.

    `reason` is a machine-readable code from pomocore.core.events.REASONS; `field` names the
    offending field when there is one.
    """

    def __init__(self, reason: str, field: str = "", detail: str = "") -> None:
        super().__init__(f"{reason}: {field} {detail}".strip())
        self.reason = reason
        self.field = field
        self.detail = detail


class SinkError(PomocoreError):
    """A sink could not make a batch durable. The batch is not acknowledged."""


class MongoWriteError(SinkError):
    """MongoDB failed a write for a reason other than "already written" (duplicate key)."""


class DocumentChanged(SinkError):
    """A document named by a producer-supplied id (`pomodoroUsageLogId`,
    `categorizedDataId`) changed between the batch's ownership check and its write: the
    write, which carries the checked owner in its filter, matched nothing (or an insert
    met a document created meanwhile). Nothing was written to that document; the batch
    is retried, and the retry's check decides (a dead letter, or the document as now)."""


class Backpressure(SinkError):
    """A dependency is unavailable or overloaded; retry the same batch after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CommitError(PomocoreError):
    """The atomic acknowledge-and-increment step failed (argument or script error)."""


class CommitNotApplied(CommitError, SinkError):
    """The commit acknowledged nothing and wrote nothing: the batch's entries that were
    pending are still pending under this consumer.

    Also a SinkError, so the consumer treats it like a sink that could not make a batch
    durable: it backs off, holds the batch and retries it, and never reports it committed.
    """


class CommitContended(CommitNotApplied):
    """Every commit attempt met an id that another consumer (or lane) had acknowledged first,
    and the attempts ran out with ids of the batch still pending."""

    def __init__(self, attempts: int, still_pending: int) -> None:
        super().__init__(
            f"commit not applied after {attempts} attempts: {still_pending} entries still "
            "pending (each attempt met an id acknowledged elsewhere)"
        )
        self.attempts = attempts
        self.still_pending = still_pending


class WrongKeyType(CommitNotApplied):
    """A key the commit script writes holds another Redis type (for instance a leaderboard
    key that some other tool made a string). The script checks every key before its first
    write and refuses the whole call; `key` names the key, `actual` its type."""

    def __init__(self, key: str, actual: str, expected: str) -> None:
        super().__init__(
            f"{key} is a {actual}, not a {expected}: nothing acknowledged or written; "
            "the batch stays pending until the key is fixed (renamed or deleted)"
        )
        self.key = key
        self.actual = actual
        self.expected = expected


class ClassifierError(PomocoreError):
    """Patterns could not be loaded or compiled."""


class BackendError(PomocoreError):
    """A call to Redis or MongoDB failed; the server refused it (wrong key type, no
    permission, a bad argument). Retrying the same call will not help. `server` is
    host:port or a URL, never a password."""

    def __init__(self, message: str, server: str = "") -> None:
        super().__init__(f"{server}: {message}" if server else message)
        self.server = server


class BackendUnavailable(BackendError):
    """The server could not be reached, timed out, or answered with an error that clears by
    itself (LOADING, BUSY, a failover in progress...): the same call may succeed later.
    The CLI exits 3 on it. `backend`: "Redis" or "MongoDB" when the CLI named it."""

    backend: str = "Redis"  # readers and producers only talk to Redis

    @classmethod
    def at(cls, backend: str, server: str, detail: str = "") -> BackendUnavailable:
        """`backend` ("Redis", "MongoDB") at `server` (password removed) is unreachable:
        the one line an operator is shown."""
        tail = f": {detail}" if detail else ""
        error = cls(f"{backend} unavailable at {server}{tail}")
        error.server, error.backend = server, backend
        return error
