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

from pomocore.core.connect import CLI_TIMEOUT_S, sync_redis
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from pomocore.workload import Workload

DATA_DIR = Path(".data")
PUBLISH_CHUNK = 1000


@dataclass
class DemoOptions:
    events: int = 30_000
    users: int = 3_000
    processes: int = 1


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
    with ExitStack() as stack:
        print("pomocore demo: starting servers …", flush=True)
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
        _print_summary(client, settings, options, stats)
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


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / max(total, 1))
    return "█" * filled + "·" * (width - filled)


def _publish_and_wait(client: Any, settings: Settings, options: DemoOptions) -> dict[str, float]:
    workload = Workload(users=options.users, distinct_variants=200)
    stream = settings.keys.stream_key
    started = time.perf_counter()
    published = 0
    while published < options.events:
        pipe = client.pipeline(transaction=False)
        for fields in workload.events(min(PUBLISH_CHUNK, options.events - published)):
            pipe.xadd(stream, fields)
        published += len(pipe.execute())
        done, _ = _group_progress(client, settings)
        _progress(published, done, options.events, started)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done, pending = _group_progress(client, settings)
        _progress(published, done, options.events, started)
        if done >= options.events and pending == 0:
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    print()
    return {"published": published, "elapsed_s": elapsed}


def _progress(published: int, done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    print(
        f"\r  published {published:>8,}/{total:,}  processed {_bar(done, total)} {done:>8,}"
        f"  {rate:>8,.0f} events/s",
        end="",
        flush=True,
    )


def _print_summary(
    client: Any, settings: Settings, options: DemoOptions, stats: dict[str, float]
) -> None:
    keys = settings.keys
    today = PeriodCalculator(settings.timezone)(time.time())
    print("\nTop of the leaderboards")
    for category, period in (
        ("work", today.daily),
        ("Development", today.weekly),
        ("SNS", today.monthly),
        ("Entertainment", today.weekly),
    ):
        key = keys.leaderboard(category, period)
        rows = client.zrevrange(key, 0, 4, withscores=True)
        print(f"  {key}")
        for rank, (user, score) in enumerate(rows, 1):
            print(f"    {rank}. {user.decode():<14} {score / 3600:7.2f} h")
    mix: Counter[str] = Counter()
    for key in client.scan_iter(match=keys.leaderboard("*", today.monthly), count=1000):
        category = key.decode().split(":")[-2]
        if category != "work":
            mix[category] += sum(s for _, s in client.zrange(key, 0, -1, withscores=True))
    reasons: Counter[str] = Counter()
    for _id, fields in client.xrange(keys.dead_letter_key):
        reasons[fields.get(b"dlq.reason", b"?").decode()] += 1
    total_time = sum(mix.values()) or 1.0
    events = int(stats["published"])
    print("\nSummary")
    print(f"  events published   {events:,}")
    print(
        f"  events/s           {events / stats['elapsed_s']:,.0f} (publish → all acknowledged, "
        f"{options.processes} consumer process(es))"
    )
    print(f"  dead letters       {sum(reasons.values()):,}  {dict(reasons.most_common())}")
    print(f"  session scores     {client.xlen(keys.session_score_key):,}")
    print(f"  classified keys    {_classification_counts(settings)}")
    print("  category mix (time this month, top 10)")
    for category, seconds in mix.most_common(10):
        print(f"    {category:<22} {100 * seconds / total_time:5.1f}%")


def _classification_counts(settings: Settings) -> str:
    """categorized_data records, and how many of them the LLM decided."""

    mongo: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        settings.mongo_uri, serverSelectionTimeoutMS=3000
    )
    try:
        docs = mongo[settings.mongo_db].categorized_data
        total, by_llm = docs.count_documents({}), docs.count_documents({"isLLMBased": True})
    except pymongo.errors.PyMongoError as exc:
        return f"unavailable ({type(exc).__name__})"
    finally:
        mongo.close()
    return f"{total:,} distinct (app, url, title), {by_llm:,} decided by the LLM"
