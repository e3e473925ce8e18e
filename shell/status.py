"""`pomocore status`: the one command an operator runs first.

Lag, pending entries and the age of the oldest, the consumers and how long each has been
idle, dead letters by reason, the LLM fallback's queue, budget and circuit, derived-mode
staleness, the stream's length and the retention settings; a verdict, and the reasons
for it. A table by default, `--json` for scripts, `--watch` to follow it.

Exit code: 0 healthy, 1 unhealthy (the problems are listed), 2 bad setting, 3 Redis
unavailable. Warnings (dead letters, an open LLM circuit...) never change it.

Read-only: it runs EXISTS, XINFO GROUPS, XINFO CONSUMERS, XPENDING, XLEN, XRANGE (the
dead-letter stream, at most DLQ_SCAN_MAX entries), GET, MGET, SCARD, ZCARD, ZRANGE and
ZSCORE, so it works with a read-only ACL user (tests/ops/test_status.py runs it as one).
The group figures are the ones `/metrics` serves (GroupSampler in shell/metrics.py); the
LLM circuit is per consumer process, so it is read from the consumers' `/metrics`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

from pomocore import dlq, exits
from pomocore.classifiers.llm.budget import Budget
from pomocore.classifiers.llm.queue import PendingQueue
from pomocore.cli_format import add_json, bounded_float, bounded_int
from pomocore.core.connect import async_redis, sync_redis
from pomocore.core.errors import PomocoreError
from pomocore.core.settings import Settings, redact
from pomocore.metrics import CIRCUIT_VALUE, LOST_TO_TRIM_SAMPLE, GroupSampler, aggregate_shards
from pomocore.progress import isatty

STATUS_TIMEOUT_S = 5.0  # socket timeout of its Redis client: a hung server fails the run
DLQ_SCAN_MAX = 10_000  # dead letters read to count reasons (20 XRANGE pages)
METRICS_TIMEOUT_S = 2.0
CONSUMERS_SHOWN = 20  # table rows; --json lists every consumer
LARGE_UNTRIMMED_STREAM = 1_000_000  # warn: POMOCORE_STREAM_MAXLEN=0 and a stream this long
LLM_QUEUE_OLD_S = 600.0  # warn: a key waits for the LLM this long
CIRCUIT_NAMES = {0: "closed", 1: "half_open", 2: "open"}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What makes the verdict unhealthy (each a `pomocore status` option)."""

    max_lag: int = 10_000
    max_pending_age_s: float = 300.0
    active_within_s: float = 30.0


DEFAULT_THRESHOLDS = Thresholds()  # (frozen: one shared default)


# --- collecting -----------------------------------------------------------------------


def collect(
    client: Any,
    settings: Settings,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    metrics_urls: Sequence[str] = (),
) -> dict[str, Any]:
    """The status report (the `--json` document), verdict included."""
    keys = settings.keys
    by_shard = GroupSampler(settings, client_factory=lambda: client).sample_shards()
    sampled = aggregate_shards(by_shard)
    group_exists = "pomocore_group_pending" in sampled
    report: dict[str, Any] = {
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "redis": redact(settings.redis_url),
        "stream": keys.stream_key,
        "group": settings.group,
        "stream_length": int(sampled["pomocore_stream_length"]),
        "group_exists": group_exists,
        "lag": _int(sampled.get("pomocore_group_lag")),
        "pending": _int(sampled.get("pomocore_group_pending")),
        "oldest_pending_age_s": _round(sampled.get("pomocore_oldest_pending_age_seconds")),
        "oldest_pending_idle_s": _round(sampled.get("pomocore_oldest_pending_idle_seconds")),
        "consumers": _consumers(client, settings, thresholds) if group_exists else [],
        "dead_letters": _dead_letters(client, settings, sampled),
        "lost_to_trim": int(sampled[LOST_TO_TRIM_SAMPLE]),
        "llm": _llm(settings, metrics_urls),
        "leaderboards": {
            "mode": settings.leaderboard_mode,
            "stale_days": _int(sampled.get("pomocore_derived_stale_days")),
            "refresh_age_s": _round(sampled.get("pomocore_derived_refresh_age_seconds")),
        },
        "retention": {
            "stream_maxlen": settings.stream_maxlen,
            "ttl_daily_days": settings.ttl_daily_days,
            "ttl_weekly_days": settings.ttl_weekly_days,
            "ttl_monthly_days": settings.ttl_monthly_days,
        },
    }
    if settings.shards > 1:  # the totals above are over the shards; each one here
        report["shards"] = settings.shards
        report["by_shard"] = _by_shard(by_shard)
    problems, warnings = verdict(report, settings, thresholds)
    return {"healthy": not problems, "problems": problems, "warnings": warnings, **report}


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _by_shard(by_shard: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    return [
        {
            "shard": shard,
            "stream": stream,
            "stream_length": int(sample["pomocore_stream_length"]),
            "lag": _int(sample.get("pomocore_group_lag")),
            "pending": _int(sample.get("pomocore_group_pending")),
            "consumers": _int(sample.get("pomocore_group_consumers")),
            "oldest_pending_age_s": _round(sample.get("pomocore_oldest_pending_age_seconds")),
        }
        for shard, (stream, sample) in enumerate(by_shard.items())
    ]


def _consumers(client: Any, settings: Settings, thresholds: Thresholds) -> list[dict[str, Any]]:
    rows = []
    for shard, keys in enumerate(settings.all_shard_keys):
        for row in _shard_consumers(client, settings, keys.stream_key, thresholds):
            rows.append({**row, "shard": shard} if settings.shards > 1 else row)
    return sorted(rows, key=lambda r: (r["idle_s"], r["name"]))


def _shard_consumers(
    client: Any, settings: Settings, stream_key: str, thresholds: Thresholds
) -> list[dict[str, Any]]:
    rows = []
    for c in client.xinfo_consumers(stream_key, settings.group):
        name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
        idle_s = c["idle"] / 1000
        inactive = c.get("inactive")  # Redis >= 7.2: since its last successful read
        rows.append(
            {
                "name": name,
                "pending": int(c["pending"]),
                "idle_s": idle_s,
                "inactive_s": None if inactive is None or inactive < 0 else inactive / 1000,
                "active": idle_s <= thresholds.active_within_s,
            }
        )
    return rows


def _dead_letters(client: Any, settings: Settings, sampled: dict[str, float]) -> dict[str, Any]:
    total = int(sampled["pomocore_dead_letter_length"])
    reasons: collections.Counter[str] = collections.Counter()
    for keys in settings.all_shard_keys if total else ():
        reasons.update(dlq.reason_counts(client, keys, DLQ_SCAN_MAX))
    return {
        "total": total,
        "by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "scanned": sum(reasons.values()),
    }


def _llm(settings: Settings, metrics_urls: Sequence[str]) -> dict[str, Any]:
    """The shared LLM state in Redis (queue, budget) and the consumers' circuit."""
    depth, oldest_s, calls_left, tokens_left = asyncio.run(_llm_shared(settings))
    return {
        "enabled": settings.llm_enabled,
        "queue_depth": depth,
        "queue_oldest_age_s": _round(oldest_s),
        "calls_left": calls_left,
        "calls_per_min": settings.llm_calls_per_min,
        "tokens_left": tokens_left,
        "tokens_per_min": settings.llm_tokens_per_min,
        "circuit": circuit_state(_metrics_urls(settings, metrics_urls)),
    }


async def _llm_shared(settings: Settings) -> tuple[int, float | None, int, int]:
    redis = async_redis(settings, socket_timeout=STATUS_TIMEOUT_S)
    try:
        queue = PendingQueue.from_settings(redis, settings)
        calls, tokens = await Budget.from_settings(redis, settings).remaining()
        return await queue.size(), await queue.oldest_age(prune=False), calls, tokens
    finally:
        await redis.aclose()


def _metrics_urls(settings: Settings, given: Sequence[str]) -> list[str]:
    """--metrics-url, else this host's consumer when POMOCORE_METRICS_PORT is set (the
    status runs beside it: `kubectl exec`, `docker compose exec`)."""
    if given:
        return list(given)
    if settings.metrics_port:
        return [f"http://127.0.0.1:{settings.metrics_port}/metrics"]
    return []


def circuit_state(urls: Sequence[str]) -> str | None:
    """The worst primary-model circuit among the consumers serving `urls` (None: none
    answered). Reads `pomocore_llm_circuit_state` as a number (0/1/2) or, labelled by
    `state`, as the state whose sample is 1."""
    worst: int | None = None
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as response:
                text = response.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            continue  # not a consumer, or gone: the circuit stays unknown
        for value in _circuit_values(text):
            worst = value if worst is None else max(worst, value)
    return None if worst is None else CIRCUIT_NAMES[worst]


def _circuit_values(text: str) -> list[int]:
    found = []
    for family in text_string_to_metric_families(text):
        if family.name != "pomocore_llm_circuit_state":
            continue
        for sample in family.samples:
            state = sample.labels.get("state")
            if state is None:
                found.append(min(2, max(0, int(sample.value))))
            elif sample.value >= 1 and state in CIRCUIT_VALUE:
                found.append(CIRCUIT_VALUE[state])
    return found


# --- the verdict ----------------------------------------------------------------------


def verdict(
    report: dict[str, Any], settings: Settings, thresholds: Thresholds
) -> tuple[list[str], list[str]]:
    """(problems, warnings): a problem makes the status unhealthy (exit 1)."""
    problems: list[str] = []
    warnings: list[str] = []
    if not report["group_exists"]:
        problems.append(
            f"group {report['group']} does not exist on {report['stream']}: "
            "no consumer has started (pomocore run creates it)"
        )
    else:
        _group_verdict(report, settings, thresholds, problems, warnings)
    _derived_verdict(report, settings, problems)
    dead = report["dead_letters"]
    if dead["total"]:
        reasons = ", ".join(f"{r} {n}" for r, n in dead["by_reason"].items())
        warnings.append(f"{dead['total']} dead letters ({reasons}): see `pomocore dlq list`")
    if report["lost_to_trim"]:
        warnings.append(
            f"{report['lost_to_trim']} entries were trimmed before they were processed "
            "(POMOCORE_STREAM_MAXLEN too small for the backlog)"
        )
    if not settings.stream_maxlen and report["stream_length"] >= LARGE_UNTRIMMED_STREAM:
        warnings.append(
            f"the stream holds {report['stream_length']:,} entries and is never trimmed "
            "(POMOCORE_STREAM_MAXLEN=0)"
        )
    _llm_verdict(report["llm"], warnings)
    return problems, warnings


def _group_verdict(
    report: dict[str, Any],
    settings: Settings,
    thresholds: Thresholds,
    problems: list[str],
    warnings: list[str],
) -> None:
    lag, pending = report["lag"], report["pending"] or 0
    if lag is not None and lag > thresholds.max_lag:
        problems.append(f"lag {lag:,} entries is above {thresholds.max_lag:,} (--max-lag)")
    age = report["oldest_pending_age_s"]
    if age is not None and age > thresholds.max_pending_age_s:
        problems.append(
            f"the oldest pending entry is {format_age(age)} old, above "
            f"{format_age(thresholds.max_pending_age_s)} (--max-pending-age-s)"
        )
    consumers = report["consumers"]
    if not any(c["active"] for c in consumers):
        waiting = (lag or 0) + pending
        text = f"no consumer read in the last {format_age(thresholds.active_within_s)}"
        if waiting:
            problems.append(f"{text}, and {waiting:,} entries wait")
        else:
            warnings.append(text)
    reclaim_s = settings.reclaim_idle_ms / 1000
    for c in consumers:
        if c["pending"] and c["idle_s"] > reclaim_s:
            warnings.append(
                f"consumer {c['name']} holds {c['pending']:,} entries and has been idle "
                f"{format_age(c['idle_s'])}: the others reclaim them (POMOCORE_RECLAIM_IDLE_MS)"
            )


def _derived_verdict(report: dict[str, Any], settings: Settings, problems: list[str]) -> None:
    board = report["leaderboards"]
    if board["mode"] != "derived" or not board["stale_days"]:
        return
    allowed_s = max(60.0, 10 * settings.derived_refresh_s)
    age = board["refresh_age_s"]
    if age is None:
        problems.append(
            f"derived mode: {board['stale_days']} days wait and weekly/monthly keys were "
            "never refreshed (is a consumer running?)"
        )
    elif age > allowed_s:
        problems.append(
            f"derived mode: weekly/monthly keys last refreshed {format_age(age)} ago, "
            f"{board['stale_days']} days wait (POMOCORE_DERIVED_REFRESH_S="
            f"{settings.derived_refresh_s:g})"
        )


def _llm_verdict(llm: dict[str, Any], warnings: list[str]) -> None:
    if llm["circuit"] == "open":
        warnings.append("LLM circuit open: undecided keys are queued until the model answers")
    if llm["enabled"] and llm["calls_left"] == 0:
        warnings.append("LLM budget of this minute spent (POMOCORE_LLM_CALLS_PER_MIN)")
    oldest = llm["queue_oldest_age_s"]
    if oldest is not None and oldest > LLM_QUEUE_OLD_S:
        warnings.append(f"a key has waited {format_age(oldest)} for the LLM")


# --- the table ------------------------------------------------------------------------


def format_age(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def render(report: dict[str, Any]) -> str:
    """The human table of a report."""
    head = "HEALTHY" if report["healthy"] else "UNHEALTHY"
    rows: list[tuple[str, str]] = [
        ("redis", report["redis"]),
        ("stream", f"{report['stream']}: {report['stream_length']:,} entries"),
        ("group", _group_line(report)),
        ("consumers", _consumers_line(report["consumers"])),
    ]
    for c in report["consumers"][:CONSUMERS_SHOWN]:
        rows.append((f"  {c['name']}", f"pending {c['pending']:,}, idle {format_age(c['idle_s'])}"))
    if len(report["consumers"]) > CONSUMERS_SHOWN:
        rows.append(
            ("  …", f"{len(report['consumers']) - CONSUMERS_SHOWN} more (--json lists all)")
        )
    rows += [
        ("dead letters", _dead_line(report["dead_letters"])),
        ("lost to trim", f"{report['lost_to_trim']:,}"),
        ("LLM", _llm_line(report["llm"])),
        ("leaderboards", _board_line(report["leaderboards"])),
        ("retention", _retention_line(report["retention"])),
    ]
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"pomocore status: {head}  ({report['checked_at']})"]
    lines += [f"  {k:<{width}}{v}" for k, v in rows]
    for title, items in (("problems", report["problems"]), ("warnings", report["warnings"])):
        if items:
            lines.append(title)
            lines += [f"  - {item}" for item in items]
    return "\n".join(lines) + "\n"


def _group_line(r: dict[str, Any]) -> str:
    if not r["group_exists"]:
        return f"{r['group']}: does not exist"
    lag = "unknown" if r["lag"] is None else f"{r['lag']:,}"
    line = f"{r['group']}: lag {lag}, pending {r['pending']:,}"
    if r["pending"] and r["oldest_pending_age_s"] is not None:
        line += f" (oldest {format_age(r['oldest_pending_age_s'])} old"
        if r["oldest_pending_idle_s"] is not None:
            line += f", idle {format_age(r['oldest_pending_idle_s'])}"
        line += ")"
    return line


def _consumers_line(consumers: list[dict[str, Any]]) -> str:
    active = sum(c["active"] for c in consumers)
    return f"{active} active of {len(consumers)}"


def _dead_line(dead: dict[str, Any]) -> str:
    if not dead["total"]:
        return "0"
    reasons = ", ".join(f"{r} {n:,}" for r, n in dead["by_reason"].items())
    partial = (
        "" if dead["scanned"] >= dead["total"] else f"; reasons of the oldest {dead['scanned']:,}"
    )
    return f"{dead['total']:,} ({reasons}{partial})"


def _llm_line(llm: dict[str, Any]) -> str:
    if not llm["enabled"] and not llm["queue_depth"]:
        return "off (POMOCORE_LLM_BASE_URL, POMOCORE_LLM_API_KEY unset)"
    state = "on" if llm["enabled"] else "off"
    queue = f"queue {llm['queue_depth']:,}"
    if llm["queue_depth"] and llm["queue_oldest_age_s"] is not None:
        queue += f" (oldest {format_age(llm['queue_oldest_age_s'])})"
    budget = (
        f"budget {llm['calls_left']:,}/{llm['calls_per_min']:,} calls, "
        f"{llm['tokens_left']:,}/{llm['tokens_per_min']:,} tokens left this minute"
    )
    circuit = f"circuit {llm['circuit'] or 'unknown (see --metrics-url)'}"
    return f"{state}; {queue}; {budget}; {circuit}"


def _board_line(board: dict[str, Any]) -> str:
    if board["mode"] != "derived":
        return "exact"
    stale = board["stale_days"] or 0
    age = board["refresh_age_s"]
    last = "never" if age is None else f"{format_age(age)} ago"
    return f"derived: {stale} days wait for their weekly/monthly keys, last refresh {last}"


def _retention_line(retention: dict[str, Any]) -> str:
    maxlen = retention["stream_maxlen"]
    stream = f"stream ~{maxlen:,} entries" if maxlen else "stream untrimmed"

    def ttl(days: int) -> str:
        return f"{days} d" if days else "forever"

    return (
        f"{stream}; daily {ttl(retention['ttl_daily_days'])}, weekly "
        f"{ttl(retention['ttl_weekly_days'])}, monthly {ttl(retention['ttl_monthly_days'])}"
    )


# --- the command ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusOptions:
    as_json: bool = False
    watch: bool = False
    interval_s: float = 2.0
    count: int = 0  # with watch: stop after this many reports (0 = until interrupted)
    metrics_urls: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)


def status_command(
    settings: Settings,
    options: StatusOptions,
    out: TextIO = sys.stdout,
    *,
    tty: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """One report, or `--watch`: a report every `interval_s`, redrawn in place on a
    terminal, one after the other (JSON: one per line) otherwise."""
    client = sync_redis(settings, STATUS_TIMEOUT_S)
    try:
        if not options.watch:
            return _emit(
                collect(client, settings, options.thresholds, options.metrics_urls), options, out
            )
        return _watch(client, settings, options, out, isatty(out) if tty is None else tty, sleep)
    finally:
        client.close()


def _emit(report: dict[str, Any], options: StatusOptions, out: TextIO) -> int:
    out.write(json.dumps(report) + "\n" if options.as_json else render(report))
    out.flush()
    return exits.OK if report["healthy"] else exits.FAILED


def _watch(
    client: Any,
    settings: Settings,
    options: StatusOptions,
    out: TextIO,
    tty: bool,
    sleep: Callable[[float], None],
) -> int:
    code, shown = exits.OK, 0
    redraw = tty and not options.as_json
    try:
        while True:
            if redraw:
                out.write("\x1b[H\x1b[2J")  # cursor home, clear the screen
            elif shown and not options.as_json:
                out.write("\n")
            try:
                report = collect(client, settings, options.thresholds, options.metrics_urls)
            except Exception as exc:  # Redis away for a moment: say so, keep watching
                error = exits.translate(exc, settings.redis_url, settings.mongo_uri)
                if error is None:
                    raise
                code = _emit_unavailable(error, options, out)
            else:
                code = _emit(report, options, out)
            shown += 1
            if options.count and shown >= options.count:
                return code
            sleep(options.interval_s)
    except KeyboardInterrupt:
        return code


def _emit_unavailable(error: PomocoreError, options: StatusOptions, out: TextIO) -> int:
    checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    if options.as_json:
        out.write(
            json.dumps({"healthy": False, "checked_at": checked_at, "error": str(error)}) + "\n"
        )
    else:
        out.write(f"pomocore status: UNAVAILABLE  ({checked_at})\n  {error}\n")
    out.flush()
    return exits.UNAVAILABLE


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """`pomocore status` in pomocore's subparsers."""
    d = DEFAULT_THRESHOLDS
    p = sub.add_parser(
        "status",
        parents=[common],
        help="is it healthy? lag, consumers, dead letters, LLM (exit 0 yes, 1 no)",
        description="Lag, pending entries, consumers and their idle times, dead letters by "
        "reason, the LLM fallback, derived-mode staleness, stream length and retention. "
        "Exit 0 healthy, 1 unhealthy (the problems are listed), 2 bad setting, 3 Redis "
        "unavailable. Read-only: works with a read-only Redis user.",
    )
    add_json(p)
    p.add_argument("--watch", action="store_true", help="refresh until interrupted (Ctrl-C)")
    p.add_argument(
        "--interval",
        type=bounded_float(0.1, 3600),
        default=2.0,
        metavar="S",
        help="--watch: seconds between reports",
    )
    p.add_argument(
        "--count",
        type=bounded_int(0, 10**9),
        default=0,
        metavar="N",
        help="--watch: stop after N reports (0 = never)",
    )
    p.add_argument(
        "--max-lag",
        type=bounded_int(0, 10**12),
        default=d.max_lag,
        metavar="N",
        help="unhealthy above this lag (entries)",
    )
    p.add_argument(
        "--max-pending-age-s",
        type=bounded_float(0, 10**9),
        default=d.max_pending_age_s,
        metavar="S",
        help="unhealthy when the oldest pending entry is older",
    )
    p.add_argument(
        "--active-within-s",
        type=bounded_float(0, 10**9),
        default=d.active_within_s,
        metavar="S",
        help="a consumer idle longer does not count as active",
    )
    p.add_argument(
        "--metrics-url",
        action="append",
        metavar="URL",
        help="a consumer's /metrics, read for the LLM circuit (repeatable; default: "
        "http://127.0.0.1:$POMOCORE_METRICS_PORT/metrics when that is set)",
    )
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env(log_format=args.log_format, log_level=args.log_level)
    options = StatusOptions(
        as_json=args.json,
        watch=args.watch,
        interval_s=args.interval,
        count=args.count,
        metrics_urls=tuple(args.metrics_url or ()),
        thresholds=Thresholds(args.max_lag, args.max_pending_age_s, args.active_within_s),
    )
    return status_command(settings, options)
