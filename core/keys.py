"""Every Redis key and channel name pomocore uses, in one place.

Names default to CONTRACT §1–4. With `hash_tag` set (Redis Cluster), every key gets the
prefix `{tag}` so the stream, its dead-letter stream, the session-score stream and the
leaderboard keys touched by one commit script share a hash slot.

With shards (POMOCORE_SHARDS > 1, core/shards.py), the keys one shard owns (its input
stream, dead letters, session scores, leaderboard and derived-mode keys, lost-to-trim
counter) take the shard's tag instead: `for_shard()`. Keys all shards share (patterns, the
LLM budget, queue and learning) keep `hash_tag`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# The consumer group of `pomocore route` (shell/route.py) on the contract stream: it moves
# what producers publish there to the shards' streams (POMOCORE_SHARDS > 1).
ROUTE_GROUP = "pomocore-route"


@dataclass(frozen=True, slots=True)
class KeySpace:
    stream: str = "pattern_match_stream"
    group: str = "pattern_match_group"
    dead_letter_stream: str = "pattern_match_stream:dlq"
    session_score_stream: str = "session_score_stream"
    leaderboard_prefix: str = "leaderboard"
    hash_tag: str = ""
    shard_tag: str = ""  # set by for_shard(): the tag of one shard's own keys

    def for_shard(self, tag: str) -> KeySpace:
        """The key space of one shard: its own keys under `{tag}`, the shared ones as here."""
        return replace(self, shard_tag=tag)

    def _k(self, name: str) -> str:
        """A key all shards share."""
        return f"{{{self.hash_tag}}}{name}" if self.hash_tag else name

    def _own(self, name: str) -> str:
        """A key of one shard (without shards: as `_k`)."""
        tag = self.shard_tag or self.hash_tag
        return f"{{{tag}}}{name}" if tag else name

    @property
    def stream_key(self) -> str:
        return self._own(self.stream)

    @property
    def dead_letter_key(self) -> str:
        return self._own(self.dead_letter_stream)

    @property
    def session_score_key(self) -> str:
        return self._own(self.session_score_stream)

    def leaderboard(self, category: str, period: str) -> str:
        """`leaderboard:{category}:{period}`; period is `2026-11-22`, `2026-W7` or `2026-M3`."""
        return self._own(f"{self.leaderboard_prefix}:{category}:{period}")

    # --- pomocore's own bookkeeping keys (not part of the contract) ---

    # Derived mode (sinks/derived.py), per leaderboard prefix: two pipelines with different
    # prefixes on one Redis (or a benchmark beside a deployment) never share them.
    @property
    def derived_stale_key(self) -> str:
        """Set of daily leaderboard keys changed since their weekly/monthly keys were rebuilt
        (added to by the commit script)."""
        return self._own(f"pomocore:derived:{self.leaderboard_prefix}:stale")

    @property
    def derived_refreshing_key(self) -> str:
        """The stale set taken over by the refresher that holds the lease, until it is done."""
        return self._own(f"pomocore:derived:{self.leaderboard_prefix}:refreshing")

    @property
    def derived_last_refresh_key(self) -> str:
        """Unix time at which the last refresh finished (the staleness gauge)."""
        return self._own(f"pomocore:derived:{self.leaderboard_prefix}:last")

    @property
    def derived_lock_key(self) -> str:
        """Lease of the one refresher at work (value: its token)."""
        return self._own(f"pomocore:derived:{self.leaderboard_prefix}:lock")

    @staticmethod
    def staging_key(key: str, token: str) -> str:
        """A temporary key a whole new `key` is written to before it is renamed over `key`
        (`pomocore leaderboard materialize`): `key` leads its name, hash tag first, so it
        sits in `key`'s hash slot."""
        return f"{key}:staging:{token}"

    def leaderboard_prefix_key(self) -> str:
        """What every leaderboard key starts with, before `{category}:{period}`."""
        return self._own(f"{self.leaderboard_prefix}:")

    @property
    def patterns_version_key(self) -> str:
        """Counter bumped on every pattern change; consumers poll it as a fallback to pub/sub."""
        return self._k("pomocore:patterns:version")

    @property
    def patterns_channel(self) -> str:
        """Pub/sub channel announcing pattern changes (payload: new version)."""
        return "pomocore:patterns:changed"

    @property
    def llm_rate_key_prefix(self) -> str:
        """Prefix of the per-minute LLM call/token budget counters shared by all consumers."""
        return self._k("pomocore:llm:budget")

    @property
    def llm_user_calls_key_prefix(self) -> str:
        """Prefix of the per-user LLM call counters (`{prefix}:{sha256(user)[:16]}:{minute}`)
        that hold each user to POMOCORE_LLM_USER_SHARE of the calls."""
        return self._k("pomocore:llm:budget:user")

    @property
    def llm_queue_key(self) -> str:
        """Set of classification keys waiting for the LLM (resolved by the reclassifier)."""
        return self._k("pomocore:llm:queue")

    @property
    def llm_queue_users_key(self) -> str:
        """Hash: queued key (its queue member) → the user it was queued for, so the
        reclassifier asks for it within that user's share and never in another's request."""
        return self._k("pomocore:llm:queue:users")

    @property
    def llm_queue_since_key(self) -> str:
        """When each queued key was first queued (sorted set, score: unix seconds); the
        queue's own scores are its due times, moved by leases and retries."""
        return self._k("pomocore:llm:queue:since")

    @property
    def learning_key_prefix(self) -> str:
        """Prefix of per app/host verdict counters used to learn patterns."""
        return self._k("pomocore:learn")

    def learning_counter_key(self, kind: str, subject: str) -> str:
        """Hash category -> verdict count of one app or host (`kind` app or domain)."""
        return f"{self.learning_key_prefix}:{kind}:{subject.lower()}"

    def learning_users_key(self, kind: str, subject: str) -> str:
        """Set of the user ids whose events brought verdicts for one app or host."""
        return f"{self.learning_key_prefix}:users:{kind}:{subject.lower()}"

    @property
    def learning_done_key(self) -> str:
        """Set of `kind:subject` already promoted (or held for approval) by some process."""
        return f"{self.learning_key_prefix}:done"

    @property
    def learning_lock_key(self) -> str:
        """Lock serialising promotions: the pattern set is read, extended and saved whole,
        and the learned-pattern cap is checked against it."""
        return f"{self.learning_key_prefix}:lock"

    @property
    def lost_to_trim_key(self) -> str:
        return self._own("pomocore:lost_to_trim")

    # `pomocore route` (shell/route.py), per contract stream (two pipelines with different
    # stream names never share them): the lease and its epoch sit in the contract stream's
    # slot (read by the same script as the stream); the ledger in each shard's.
    @property
    def route_lease_key(self) -> str:
        """Lease of the one forwarder at work (value: its token)."""
        return self._k(f"pomocore:route:{self.stream}:lease")

    @property
    def route_epoch_key(self) -> str:
        """Counter bumped by every forwarder that takes the lease: its fencing epoch."""
        return self._k(f"pomocore:route:{self.stream}:epoch")

    @property
    def route_last_key(self) -> str:
        """Hash of one shard: `id`, the last contract-stream entry id moved to this shard,
        and `epoch`, the highest forwarder epoch seen (older forwarders are refused)."""
        return self._own(f"pomocore:route:{self.stream}:last")
