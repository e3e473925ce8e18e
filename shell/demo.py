"""`pomocore demo`: the whole pipeline on one machine in under a minute.

Starts an embedded Valkey and MongoDB-wire server under `.data/` (unless
POMOCORE_REDIS_URL / POMOCORE_MONGO_URI point at servers, in which case every key, the
group and the database get a `pomocore-demo` prefix so nothing of yours is touched),
starts `pomocore run` as a real subprocess, publishes a synthetic workload while it
consumes, shows progress, then prints leaderboards and a summary and stops what it
started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import redis

from pomocore.cli_format import write_json
from pomocore.core.connect import CLI_TIMEOUT_S, sync_mongo, sync_redis
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.dlq import reason_counts
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from pomocore.progress import Progress
from pomocore.workload import Workload

DATA_DIR = Path(".data")
PUBLISH_CHUNK = 1000


@dataclass
class DemoOptions:
    events: int = 30_000
    users: int = 3_000
    processes: int = 1
    as_json: bool = False


def _servers(stack: ExitStack) -> tuple[dict[str, str], bool]:
    """Server settings for the demo, and whether they are external (not ours)."""
    env: dict[str, str] = {}
    external = bool(os.environ.get("POMOCORE_REDIS_URL") or os.environ.get("POMOCORE_MONGO_URI"))
    if not os.environ.get("POMOCORE_REDIS_URL"):
        shutil.rmtree(DATA_DIR / "valkey", ignore_errors=True)
        env["POMOCORE_REDIS_URL"] = stack.enter_context(EmbeddedRedis(DATA_DIR / "valkey")).url
    if not os.environ.get("POMOCORE_MONGO_URI"):
        shutil.rmtree(DATA_DIR / "mongo", ignore_errors=True)
        env["POMOCORE_MONGO_URI"] = stack.enter_context(EmbeddedMongo(DATA_DIR / "mongo")).url
    if external:
        tag = f"pomocore-demo-{int(time.time())}"
        env.update(
            {
                "POMOCORE_STREAM": f"{tag}:pattern_match_stream",
                "POMOCORE_GROUP": f"{tag}:group",
                "POMOCORE_DEAD_LETTER_STREAM": f"{tag}:pattern_match_stream:dlq",
                "POMOCORE_SESSION_SCORE_STREAM": f"{tag}:session_score_stream",
                "POMOCORE_LEADERBOARD_PREFIX": f"{tag}:leaderboard",
                "POMOCORE_MONGO_DB": tag.replace("-", "_"),
            }
        )
    return env, external


def run_demo(options: DemoOptions, extra: dict[str, Any]) -> int:
    """The demo; its summary on stdout (`as_json`: one JSON document), progress and
    what it is doing on stderr."""
    with ExitStack() as stack:
        print("pomocore demo: starting servers …", file=sys.stderr, flush=True)
        env, _ = _servers(stack)
        if extra.get("llm_base_url"):
            env["POMOCORE_LLM_BASE_URL"] = str(extra["llm_base_url"])
        child_env = {**os.environ, **env}
        settings = Settings.from_env(child_env)
        consumer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pomocore.cli",
                "run",
                "--processes",
                str(options.processes),
                "--log-format",
                "text",
                "--log-level",
                "WARNING",
            ],
            env=child_env,
        )
        try:
            client = sync_redis(settings, timeout_s=CLI_TIMEOUT_S)
            stats = _publish_and_wait(client, settings, options)
        finally:
            consumer.send_signal(signal.SIGTERM)
            code = consumer.wait(settings.shutdown_timeout_s + 10)
        summary = demo_summary(client, settings, options, stats)
        summary["consumer_exit_code"] = code
        if options.as_json:
            write_json(summary, sys.stdout)
        else:
            _print_summary(summary)
            print(f"consumer exited with code {code}")
        return 0 if code == 0 else 1
    return 1  # unreachable; satisfies type checkers


def _group_progress(client: Any, settings: Settings) -> tuple[int, int]:
    """(entries acknowledged by the group, entries pending)."""
    try:
        groups = client.xinfo_groups(settings.keys.stream_key)
    except redis.ResponseError:
        return 0, 0
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == settings.group:
            read = int(g.get("entries-read") or 0)
            pending = int(g.get("pending") or 0)
            return read - pending, pending
    return 0, 0


def _publish_and_wait(client: Any, settings: Settings, options: DemoOptions) -> dict[str, float]:
    workload = Workload(users=options.users, distinct_variants=200)
    stream = settings.keys.stream_key
    started = time.perf_counter()
    published = 0
    with Progress("demo: processed", options.events, unit="events") as progress:
        while published < options.events:
            pipe = client.pipeline(transaction=False)
            for fields in workload.events(min(PUBLISH_CHUNK, options.events - published)):
                pipe.xadd(stream, fields)
            published += len(pipe.execute())
            done, _ = _group_progress(client, settings)
            progress.update(done, f"published {published:,}")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done, pending = _group_progress(client, settings)
            progress.update(done)
            if done >= options.events and pending == 0:
                break
            time.sleep(0.2)
    return {"published": published, "elapsed_s": time.perf_counter() - started}


def demo_summary(
    client: Any, settings: Settings, options: DemoOptions, stats: dict[str, float]
) -> dict[str, Any]:
    """What the demo shows (`--json`: this document; keys in docs/cli.md)."""
    keys = settings.keys
    today = PeriodCalculator(settings.timezone)(time.time())
    top = []
    for category, period in (
        ("work", today.daily),
        ("Development", today.weekly),
        ("SNS", today.monthly),
        ("Entertainment", today.weekly),
    ):
        key = keys.leaderboard(category, period)
        rows = client.zrevrange(key, 0, 4, withscores=True)
        top.append(
            {
                "key": key,
                "rows": [
                    {"rank": rank, "user": user.decode(), "hours": round(score / 3600, 2)}
                    for rank, (user, score) in enumerate(rows, 1)
                ],
            }
        )
    mix: Counter[str] = Counter()
    for key in client.scan_iter(match=keys.leaderboard("*", today.monthly), count=1000):
        category = key.decode().split(":")[-2]
        if category != "work":
            mix[category] += sum(s for _, s in client.zrange(key, 0, -1, withscores=True))
    reasons = reason_counts(client, keys)
    total_time = sum(mix.values()) or 1.0
    events = int(stats["published"])
    return {
        "events_published": events,
        "elapsed_s": round(stats["elapsed_s"], 3),
        "events_per_s": round(events / stats["elapsed_s"]),
        "processes": options.processes,
        "dead_letters": {"total": sum(reasons.values()), "by_reason": dict(reasons.most_common())},
        "session_scores": client.xlen(keys.session_score_key),
        "classified": _classification_counts(settings),
        "top": top,
        "category_mix_percent": {
            c: round(100 * seconds / total_time, 1) for c, seconds in mix.most_common(10)
        },
    }


def _print_summary(summary: dict[str, Any]) -> None:
    print("\nTop of the leaderboards")
    for board in summary["top"]:
        print(f"  {board['key']}")
        for row in board["rows"]:
            print(f"    {row['rank']}. {row['user']:<14} {row['hours']:7.2f} h")
    dead = summary["dead_letters"]
    classified = summary["classified"]
    if "error" in classified:
        classified_text = f"unavailable ({classified['error']})"
    else:
        classified_text = (
            f"{classified['distinct']:,} distinct (app, url, title), "
            f"{classified['decided_by_llm']:,} decided by the LLM"
        )
    print("\nSummary")
    print(f"  events published   {summary['events_published']:,}")
    print(
        f"  events/s           {summary['events_per_s']:,} (publish → all acknowledged, "
        f"{summary['processes']} consumer process(es))"
    )
    print(f"  dead letters       {dead['total']:,}  {dead['by_reason']}")
    print(f"  session scores     {summary['session_scores']:,}")
    print(f"  classified keys    {classified_text}")
    print("  category mix (time this month, top 10)")
    for category, percent in summary["category_mix_percent"].items():
        print(f"    {category:<22} {percent:5.1f}%")


def _classification_counts(settings: Settings) -> dict[str, Any]:
    """categorized_data records, and how many of them the LLM decided."""

    mongo = sync_mongo(settings)
    try:
        docs = mongo[settings.mongo_db].categorized_data
        total, by_llm = docs.count_documents({}), docs.count_documents({"isLLMBased": True})
    except pymongo.errors.PyMongoError as exc:
        return {"error": type(exc).__name__}
    finally:
        mongo.close()
    return {"distinct": total, "decided_by_llm": by_llm}
