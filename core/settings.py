"""One settings object, read from `POMOCORE_*` environment variables and CLI flags.

Every setting is validated at start-up; a bad one raises ConfigError naming it. Secrets
(`POMOCORE_REDIS_URL`, `POMOCORE_MONGO_URI`, `POMOCORE_LLM_API_KEY`, `POMOCORE_API_TOKEN`)
can also come from a file named by the same variable with a `_FILE` suffix; setting both
is an error. The OpenAI SDK's own `OPENAI_API_KEY` and `OPENAI_BASE_URL` stand in for the
LLM settings when pomocore's are unset (docs/migrating.md). `setting_sources()` says where
each value came from (`pomocore config`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pomocore.core.errors import ConfigError
from pomocore.core.ids import stream_tag
from pomocore.core.keys import KeySpace
from pomocore.core.shards import MAX_SHARDS, parse_shard_list, shard_tag

ENV_PREFIX = "POMOCORE_"
SECRET_SETTINGS = frozenset({"redis_url", "mongo_uri", "llm_api_key", "api_token"})
KNOWN_SINKS = ("mongo", "leaderboard")
LEADERBOARD_MODES = ("exact", "derived")
LLM_LEARN_MODES = ("auto", "approve")
LLM_SEND_MODES = ("full", "host", "app")
# Variables of the OpenAI SDK read when pomocore's own (and its `_FILE`) are unset: the Go
# service, and most OpenAI clients, are configured with them (docs/migrating.md).
FALLBACK_ENV = {"llm_api_key": "OPENAI_API_KEY", "llm_base_url": "OPENAI_BASE_URL"}
MIN_API_TOKEN_CHARS = 16  # a guessable bearer token is no token
# An entry valid by its fields: app, title and url of max_text_chars characters of up to
# 4 UTF-8 bytes each, plus userId (128 characters), the numbers, ids and unknown fields.
ENTRY_BYTES_PER_TEXT_CHAR = 12
ENTRY_BYTES_OTHER_FIELDS = 4096
# A batch holds at least this many entries of POMOCORE_MAX_ENTRY_BYTES: the guarded read
# (consumers/reads.py) stops at half the batch bytes, plus one entry.
BATCH_ENTRIES_AT_MAX = 4


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _setting(default: Any, help: str, **bounds: Any) -> Any:
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True, slots=True)
class Settings:
    # --- connections ---
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0", "Redis/Valkey URL (redis://, rediss:// for TLS)"
    )
    mongo_uri: str = _setting("mongodb://127.0.0.1:27017", "MongoDB connection string")
    mongo_db: str = _setting("pomocore", "MongoDB database name")
    redis_cluster: int = _setting(0, "1 = connect as a Redis Cluster client", lo=0, hi=1)
    redis_tls_ca_file: str = _setting("", "CA bundle verifying the Redis server (rediss://)")
    redis_tls_cert_file: str = _setting("", "client certificate for Redis mutual TLS")
    redis_tls_key_file: str = _setting("", "client key for Redis mutual TLS")
    # --- contract names (CONTRACT §1-4) ---
    stream: str = _setting("pattern_match_stream", "input stream key")
    group: str = _setting("pattern_match_group", "consumer group")
    dead_letter_stream: str = _setting("pattern_match_stream:dlq", "dead-letter stream key")
    session_score_stream: str = _setting("session_score_stream", "session-score output stream")
    leaderboard_prefix: str = _setting("leaderboard", "leaderboard key prefix")
    key_hash_tag: str = _setting("", "Redis Cluster hash tag prefixed as {tag} to every key")
    shards: int = _setting(
        1,
        "user-partitioned shards, each with its own stream, group and leaderboard keys "
        "under one hash tag (1 = the contract's keys, unchanged)",
        lo=1,
        hi=MAX_SHARDS,
    )
    consumer_shards: str = _setting(
        "", "shards this consumer process serves, e.g. 0-2,5 (empty = all)"
    )
    timezone: str = _setting("Asia/Seoul", "IANA time zone of leaderboard periods")
    consumer_name: str = _setting("", "consumer name in the group (default host-pid)")
    # --- batching ---
    batch_size: int = _setting(1000, "max entries per XREADGROUP (COUNT)", lo=1, hi=5_000)
    batch_max_bytes: int = _setting(
        8 << 20,
        "max bytes of stream entries one batch reads (COUNT adapts to the entries' size; "
        "a bigger reply is cut off and read again entry by entry)",
        lo=64 << 10,
        hi=1 << 30,
    )
    block_ms: int = _setting(1000, "XREADGROUP BLOCK when the stream is idle", lo=1, hi=60_000)
    linger_ms: int = _setting(
        20, "max wait to fill a partial batch before processing it", lo=0, hi=10_000
    )
    sinks: tuple[str, ...] = _setting(KNOWN_SINKS, "comma list of sinks: mongo,leaderboard")
    lanes: int = _setting(
        4, "concurrent batches per process (overlap reads, work, commits)", lo=1, hi=16
    )
    processes: int = _setting(1, "consumer processes (pomocore run --processes)", lo=1, hi=64)
    shutdown_timeout_s: float = _setting(
        30.0, "max time to finish in-flight batches on SIGTERM", lo=0.1, hi=3600
    )
    # --- validation ---
    max_future_s: float = _setting(
        300.0, "how far in the future a timestamp may be", lo=0, hi=86_400
    )
    max_text_chars: int = _setting(8192, "max length of app, title and url", lo=64, hi=1_000_000)
    max_entry_bytes: int = _setting(
        128 << 10,
        "an entry whose field names and values add up to more (or with more than 256 "
        "fields) is dead-lettered as too_large, unread",
        lo=4096,
        hi=256 << 20,
    )
    # --- classification ---
    decision_cache_size: int = _setting(
        20_000, "LRU size of (app,url,title) decisions", lo=0, hi=50_000_000
    )
    decision_cache_bytes: int = _setting(
        64 << 20,
        "max bytes the decision cache holds (keys, decisions and their bookkeeping)",
        lo=0,
        hi=1 << 36,
    )
    classifier_pool_workers: int = _setting(
        0, "processes classifying cache misses (0 = inline; never paid on 2 CPUs)", lo=0, hi=64
    )
    classifier_pool_threshold: int = _setting(
        50_000,
        "misses per batch from which the pool is used; with workers, at most the batch size",
        lo=1,
        hi=10_000_000,
    )
    pattern_poll_s: float = _setting(5.0, "period of the pattern version check", lo=0.1, hi=3600)
    # --- reliability ---
    reclaim_idle_ms: int = _setting(
        60_000, "reclaim entries idle longer than this (XAUTOCLAIM)", lo=100, hi=86_400_000
    )
    max_deliveries: int = _setting(
        10, "dead-letter an entry delivered more than this", lo=1, hi=1000
    )
    mongo_retry_max: int = _setting(
        5, "retries of a failed MongoDB write before backing off", lo=0, hi=100
    )
    mongo_timeout_ms: int = _setting(
        5_000,
        "deadline of one batch's MongoDB writes (timeoutMS); at most half the reclaim idle",
        lo=100,
        hi=600_000,
    )
    stream_maxlen: int = _setting(
        0,
        "input stream kept near this many entries; never trims one a group still needs "
        "(0 = no trimming)",
        lo=0,
        hi=10**12,
    )
    dead_letter_maxlen: int = _setting(
        10_000, "dead-letter stream cap: oldest dropped past this many (0 = none)", lo=0,
        hi=10**9,
    )
    dead_letter_max_age_s: float = _setting(
        1_209_600.0, "dead letters older than this are dropped (0 = kept)", lo=0, hi=3.2e8
    )
    session_score_maxlen: int = _setting(
        1_000_000, "session-score stream cap: oldest dropped past this many (0 = none)", lo=0,
        hi=10**9,
    )
    session_score_max_age_s: float = _setting(
        604_800.0, "session scores older than this are dropped (0 = kept)", lo=0, hi=3.2e8
    )
    # --- LLM ---
    llm_base_url: str = _setting("", "OpenAI-compatible base URL (empty = no LLM)")
    llm_api_key: str = _setting("", "API key (or POMOCORE_LLM_API_KEY_FILE)")
    llm_model: str = _setting("gpt-4o-mini", "primary model")
    llm_fallback_model: str = _setting("", "model used when the primary fails")
    llm_timeout_s: float = _setting(20.0, "per-call timeout", lo=0.1, hi=600)
    llm_open_circuit_s: float = _setting(15.0, "how long the circuit stays open", lo=0.1, hi=3600)
    llm_calls_per_min: int = _setting(
        20, "max LLM calls per minute across all consumers", lo=1, hi=100_000
    )
    llm_tokens_per_min: int = _setting(
        200_000, "max LLM tokens per minute across all consumers", lo=100, hi=100_000_000
    )
    llm_batch_size: int = _setting(25, "items per LLM request", lo=1, hi=500)
    llm_waiting_batches: int = _setting(
        16, "batches a process holds while their events wait for the LLM (asked one per "
        "lane at once); the lanes read on meanwhile, and with all taken a batch's undecided "
        "keys get the no-LLM rule and are queued (0 = a lane waits)", lo=0, hi=256,
    )  # fmt: skip
    llm_user_share: float = _setting(
        0.25, "share of the LLM calls per minute one user may take", lo=0.01, hi=1.0
    )
    llm_learn_after: int = _setting(
        5, "same verdict N times for an app/host makes it a learned pattern", lo=1, hi=10_000
    )
    llm_learn_min_users: int = _setting(
        3, "distinct users whose verdicts must agree before an app/host is learned", lo=1,
        hi=10_000,
    )
    llm_learn_mode: str = _setting(
        "auto", "auto: learned patterns apply at once; approve: they wait for an operator"
    )
    llm_learned_max: int = _setting(
        500, "max learned patterns, active and pending together (0 = learn nothing)", lo=0,
        hi=100_000,
    )
    llm_memory_bytes: int = _setting(
        16 << 20,
        "max bytes of the LLM verdicts remembered in process (and as much for keys it "
        "answered invalidly)",
        lo=0,
        hi=1 << 34,
    )
    llm_queue_max: int = _setting(
        10_000,
        "max keys waiting for the reclassifier (shared); more are dropped and counted",
        lo=0,
        hi=10_000_000,
    )
    llm_queue_ttl_s: float = _setting(
        86_400.0,
        "a key waiting longer than this for the reclassifier is dropped and counted",
        lo=60,
        hi=30 * 86_400,
    )
    llm_send: str = _setting(
        "full", "what an LLM request carries: full (app, title, URL host+path), host, app"
    )
    # --- operations ---
    metrics_port: int = _setting(
        0, "Prometheus /metrics, /healthz, /readyz port (0 = off)", lo=0, hi=65535
    )
    metrics_host: str = _setting(
        "0.0.0.0",
        "address /metrics and the probes bind to (an IP; 127.0.0.1 = this host only)",
    )
    # Both HTTP servers (the ops port, `pomocore leaderboard serve`): each connection is a
    # file descriptor, so the bound stays well under a container's usual 1,024 (ulimit -n).
    http_max_connections: int = _setting(
        256,
        "open connections per HTTP server (ops port, leaderboard API); past it the one "
        "waiting longest (an idle one first) is closed",
        lo=8,
        hi=65_536,
    )
    http_request_timeout_s: float = _setting(
        5.0,
        "time an HTTP client has to send its request head, and again to read the answer; "
        "idle and slow connections are closed then",
        lo=0.5,
        hi=300,
    )
    api_token: str = _setting(
        "",
        "bearer token the leaderboard HTTP API requires (empty = none; 16+ characters)",
    )
    liveness_timeout_s: float = _setting(
        60.0,
        "/healthz fails when the event loop, or a lane past its step's own timeout, "
        "is stuck this long",
        lo=1.0,
        hi=3600,
    )
    log_format: str = _setting("json", "json or text")
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING, ERROR")
    # --- leaderboard retention (days after the end of the period; 0 = keep forever) ---
    ttl_daily_days: int = _setting(0, "keep daily leaderboards N days", lo=0, hi=36_500)
    ttl_weekly_days: int = _setting(0, "keep weekly leaderboards N days", lo=0, hi=36_500)
    ttl_monthly_days: int = _setting(0, "keep monthly leaderboards N days", lo=0, hi=36_500)
    # --- leaderboard mode (docs/guarantees.md, "Derived weekly and monthly keys") ---
    leaderboard_mode: str = _setting(
        "exact", "exact, or derived: weekly/monthly keys rebuilt from daily ones"
    )
    derived_refresh_s: float = _setting(
        5.0, "derived mode: max staleness of weekly/monthly keys", lo=0.1, hi=3600
    )

    @property
    def keys(self) -> KeySpace:
        return KeySpace(
            stream=self.stream,
            group=self.group,
            dead_letter_stream=self.dead_letter_stream,
            session_score_stream=self.session_score_stream,
            leaderboard_prefix=self.leaderboard_prefix,
            hash_tag=self.key_hash_tag,
        )

    def shard_keys(self, shard: int) -> KeySpace:
        """The keys of one shard; without shards (POMOCORE_SHARDS=1), `keys` itself."""
        if self.shards == 1:
            return self.keys
        return self.keys.for_shard(shard_tag(shard, self.shards))

    @property
    def all_shard_keys(self) -> tuple[KeySpace, ...]:
        """Every shard's keys, in shard order (one entry without shards)."""
        return tuple(self.shard_keys(i) for i in range(self.shards))

    @property
    def served_shards(self) -> tuple[int, ...]:
        """The shards this consumer process serves (POMOCORE_CONSUMER_SHARDS)."""
        return parse_shard_list(self.consumer_shards, self.shards, "POMOCORE_CONSUMER_SHARDS")

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_base_url or self.llm_api_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `POMOCORE_*` variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw, _ = _lookup(env, f.name)
            if raw is not None:
                values[f.name] = _parse(f, raw)
        for name, value in overrides.items():
            if value is None:
                continue
            f = _field(name)
            values[name] = _parse(f, value) if isinstance(value, str) else value
        settings = cls(**values)
        settings.validate()
        if not settings.consumer_name:
            settings = dataclasses.replace(settings, consumer_name=default_consumer_name())
        return settings

    @classmethod
    def from_dsn(cls, redis_url: str, mongo_uri: str | None = None, **overrides: Any) -> Settings:
        """Defaults plus the given server addresses (tests, scripts)."""
        extra = {"mongo_uri": mongo_uri} if mongo_uri else {}
        return cls.from_env({}, redis_url=redis_url, **extra, **overrides)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
            if lo is not None and not (lo <= value <= hi):
                raise ConfigError(env_name(f.name), f"must be between {lo} and {hi}, got {value!r}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError("POMOCORE_TIMEZONE", f"unknown time zone {self.timezone!r}") from exc
        unknown = [s for s in self.sinks if s not in KNOWN_SINKS]
        if unknown or not self.sinks:
            raise ConfigError(
                "POMOCORE_SINKS",
                f"choose from {','.join(KNOWN_SINKS)}, got {','.join(self.sinks)!r}",
            )
        if "leaderboard" not in self.sinks:
            raise ConfigError(
                "POMOCORE_SINKS", "the leaderboard sink acknowledges entries and cannot be left out"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "POMOCORE_REDIS_URL", "must start with redis://, rediss:// or unix://"
            )
        if "mongo" in self.sinks and not self.mongo_uri.startswith(
            ("mongodb://", "mongodb+srv://")
        ):
            raise ConfigError("POMOCORE_MONGO_URI", "must start with mongodb:// or mongodb+srv://")
        try:
            ipaddress.ip_address(self.metrics_host)
        except ValueError:
            raise ConfigError(
                "POMOCORE_METRICS_HOST", f"must be an IP address, got {self.metrics_host!r}"
            ) from None
        if self.api_token and len(self.api_token) < MIN_API_TOKEN_CHARS:
            raise ConfigError(
                "POMOCORE_API_TOKEN",
                f"must be at least {MIN_API_TOKEN_CHARS} characters (e.g. openssl rand -hex 32)",
            )
        if self.log_format not in ("json", "text"):
            raise ConfigError(
                "POMOCORE_LOG_FORMAT", f"must be json or text, got {self.log_format!r}"
            )
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("POMOCORE_LOG_LEVEL", f"unknown level {self.log_level!r}")
        for name in (
            "stream",
            "group",
            "dead_letter_stream",
            "session_score_stream",
            "leaderboard_prefix",
        ):
            if not getattr(self, name):
                raise ConfigError(env_name(name), "must not be empty")
        if self.classifier_pool_workers and self.classifier_pool_threshold > self.batch_size:
            # A batch never holds more misses than entries: such a pool would never run.
            raise ConfigError(
                "POMOCORE_CLASSIFIER_POOL_THRESHOLD",
                f"must be at most POMOCORE_BATCH_SIZE ({self.batch_size}) when "
                "POMOCORE_CLASSIFIER_POOL_WORKERS > 0, else the pool never runs "
                f"(got {self.classifier_pool_threshold}; see docs/classification.md)",
            )
        if self.redis_cluster and not self.key_hash_tag:
            raise ConfigError(
                "POMOCORE_KEY_HASH_TAG",
                "required with POMOCORE_REDIS_CLUSTER=1: the commit script's keys share a slot",
            )
        if self.llm_base_url and not self.llm_base_url.startswith(("http://", "https://")):
            raise ConfigError(
                "POMOCORE_LLM_BASE_URL",
                "must be an http:// or https:// URL (OPENAI_BASE_URL is read when it is unset)",
            )
        self.served_shards  # noqa: B018 - raises ConfigError naming POMOCORE_CONSUMER_SHARDS
        self._validate_shard_streams()
        self._validate_leaderboard_mode()
        self._validate_mongo_timeout()
        self._validate_entry_bytes()
        self._validate_llm_choices()

    def _validate_shard_streams(self) -> None:
        """Derived usage-log ids carry 3 bytes naming the stream (core/ids.py); shards'
        streams repeat each other's entry ids, so their 3 bytes must differ (they do for
        the default names and every POMOCORE_SHARDS; a chosen name might not)."""
        if self.shards == 1:
            return
        streams = [k.stream_key for k in self.all_shard_keys] + [self.keys.stream_key]
        if len({stream_tag(k) for k in streams}) < len(streams):
            raise ConfigError(
                "POMOCORE_STREAM",
                f"{self.stream!r} gives two of the {self.shards} shards' streams the same "
                "usage-log id tag (core/ids.py); choose another stream name",
            )

    def _validate_llm_choices(self) -> None:
        for name, value, choices in (
            ("llm_learn_mode", self.llm_learn_mode, LLM_LEARN_MODES),
            ("llm_send", self.llm_send, LLM_SEND_MODES),
        ):
            if value not in choices:
                raise ConfigError(
                    env_name(name), f"must be one of {', '.join(choices)}, got {value!r}"
                )

    def _validate_entry_bytes(self) -> None:
        """Every entry valid by its fields must fit (each of app, title and url up to
        max_text_chars characters of up to 4 bytes, plus room for the other fields), and a
        batch must hold several of the largest entries."""
        need = ENTRY_BYTES_PER_TEXT_CHAR * self.max_text_chars + ENTRY_BYTES_OTHER_FIELDS
        if self.max_entry_bytes < need:
            raise ConfigError(
                "POMOCORE_MAX_ENTRY_BYTES",
                f"{self.max_entry_bytes} is below what an entry valid by the contract may "
                f"take with POMOCORE_MAX_TEXT_CHARS={self.max_text_chars} ({need} bytes: "
                f"app, title and url of {self.max_text_chars} characters of up to 4 bytes, "
                "plus the other fields); raise it or lower POMOCORE_MAX_TEXT_CHARS",
            )
        if self.batch_max_bytes < BATCH_ENTRIES_AT_MAX * self.max_entry_bytes:
            raise ConfigError(
                "POMOCORE_BATCH_MAX_BYTES",
                f"must be at least {BATCH_ENTRIES_AT_MAX} x POMOCORE_MAX_ENTRY_BYTES "
                f"({BATCH_ENTRIES_AT_MAX * self.max_entry_bytes}), got {self.batch_max_bytes}",
            )

    def _validate_mongo_timeout(self) -> None:
        """A MongoDB wait must end well within the idle time after which the group hands a
        batch to another consumer (docs/guarantees.md, "A MongoDB outage is not a delivery")."""
        if "mongo" in self.sinks and self.mongo_timeout_ms * 2 > self.reclaim_idle_ms:
            raise ConfigError(
                "POMOCORE_MONGO_TIMEOUT_MS",
                f"{self.mongo_timeout_ms} ms is more than half of POMOCORE_RECLAIM_IDLE_MS "
                f"({self.reclaim_idle_ms} ms): one attempt's MongoDB writes must end well "
                "within the reclaim idle; lower POMOCORE_MONGO_TIMEOUT_MS or raise "
                "POMOCORE_RECLAIM_IDLE_MS",
            )

    def _validate_leaderboard_mode(self) -> None:
        if self.leaderboard_mode not in LEADERBOARD_MODES:
            raise ConfigError(
                "POMOCORE_LEADERBOARD_MODE",
                f"must be exact or derived, got {self.leaderboard_mode!r}",
            )
        if self.leaderboard_mode == "derived" and self.ttl_daily_days:
            # A weekly/monthly key is rebuilt from its days: every day must outlive it.
            weekly, monthly = self.ttl_weekly_days, self.ttl_monthly_days
            need = None if not (weekly and monthly) else max(weekly + 7, monthly + 31)
            if need is None or self.ttl_daily_days < need:
                raise ConfigError(
                    "POMOCORE_TTL_DAILY_DAYS",
                    "with POMOCORE_LEADERBOARD_MODE=derived, daily keys must outlive the weekly "
                    "and monthly keys built from them: 0 (keep forever), or at least "
                    "POMOCORE_TTL_WEEKLY_DAYS + 7 and POMOCORE_TTL_MONTHLY_DAYS + 31 (both set)",
                )

    def describe(self) -> dict[str, Any]:
        """Settings for logs and `pomocore check`: secrets redacted."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = redact(value) if f.name in SECRET_SETTINGS else value
        return out


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def redact(value: Any) -> Any:
    """Hide a password in a URI (scheme://user:***@host) or a whole bare secret."""
    if not isinstance(value, str) or not value:
        return value
    if "://" in value:
        scheme, rest = value.split("://", 1)
        if "@" in rest:
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return value
    return "***"


def _field(name: str) -> dataclasses.Field[Any]:
    for f in dataclasses.fields(Settings):
        if f.name == name:
            return f
    raise ConfigError(name, "unknown setting")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a setting's value came from: `kind` is default, env, file, fallback or flag;
    `variable` the environment variable read (`..._FILE` for a file), if any."""

    kind: str
    variable: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.variable}".strip()


def setting_sources(env: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Source]:
    """Each setting's source, by the rules `Settings.from_env` reads them with."""
    env = os.environ if env is None else env
    out: dict[str, Source] = {}
    for f in dataclasses.fields(Settings):
        if overrides.get(f.name) is not None:
            out[f.name] = Source("flag")
        else:
            _, out[f.name] = _lookup(env, f.name)
    return out


def _lookup(env: Mapping[str, str], name: str) -> tuple[str | None, Source]:
    """The raw value of a setting (None: its default) and where it came from."""
    var = env_name(name)
    direct, path = env.get(var), env.get(var + "_FILE")
    if path is not None and name not in SECRET_SETTINGS:
        raise ConfigError(var + "_FILE", "only secrets can be read from a file")
    if direct is not None and path is not None:
        raise ConfigError(var, f"set either {var} or {var}_FILE, not both")
    if direct is not None:
        return direct, Source("env", var)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip(), Source("file", var + "_FILE")
        except OSError as exc:
            raise ConfigError(var + "_FILE", f"cannot read {path}: {exc.strerror}") from exc
    fallback = FALLBACK_ENV.get(name)
    if fallback and env.get(fallback):
        return env[fallback], Source("fallback", fallback)
    return None, Source("default")


_PARSERS: dict[Any, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "tuple[str, ...]": lambda raw: tuple(s.strip() for s in raw.split(",") if s.strip()),
}


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    parser = _PARSERS[f.type]
    try:
        return parser(raw.strip())
    except ValueError as exc:
        raise ConfigError(env_name(f.name), f"expected {f.type}, got {raw!r}") from exc


def markdown_table() -> str:
    """The configuration table of the README (tests keep the README in sync with it)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        secret = " (or `_FILE`)" if f.name in SECRET_SETTINGS else ""
        if f.name in FALLBACK_ENV:
            secret += f", else `{FALLBACK_ENV[f.name]}`"
        shown = f"`{default}`" if default != "" else "—"
        rows.append(f"| `{env_name(f.name)}`{secret} | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)
