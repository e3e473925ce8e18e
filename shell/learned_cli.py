"""`pomocore patterns learned [--approve PATTERN | --reject PATTERN]`: review the patterns the
LLM layer learned (active) or holds for approval (pending, POMOCORE_LLM_LEARN_MODE=approve)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, TextIO

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from pomocore import exits
from pomocore.classifiers.llm.learning import REVIEW_COLLECTION
from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.store import (
    add_learned_pattern,
    load_or_seed_patterns,
    publish_change,
    save_patterns,
)
from pomocore.cli_format import write_json
from pomocore.core.connect import async_mongo, async_redis
from pomocore.core.errors import ClassifierError
from pomocore.core.settings import Settings


def learned_rows(
    pattern_set: PatternSet, review: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Active learned entries of the set, then pending ones: (status, category, kind,
    pattern, verdicts, users, learnedAt)."""
    rows: list[dict[str, Any]] = []
    for entry in pattern_set.entries:
        for kind, patterns in (("app", entry.app_patterns), ("domain", entry.domain_patterns)):
            for p in patterns:
                if p.learned:
                    meta = review.get(f"{kind}:{p.text.lower()}", {})
                    rows.append(_row("active", entry.category, kind, p.text, meta))
    for meta in review.values():
        if meta.get("status") == "pending":
            rows.append(_row("pending", meta["category"], meta["kind"], meta["pattern"], meta))
    return rows


def _row(
    status: str, category: str, kind: str, pattern: str, meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        "status": status,
        "category": category,
        "kind": kind,
        "pattern": pattern,
        "verdicts": meta.get("verdicts"),
        "users": meta.get("users"),
        "learnedAt": meta.get("learnedAt"),
    }


def without_learned(pattern_set: PatternSet, pattern: str) -> tuple[PatternSet, list[str]]:
    """The set minus the learned entries spelled `pattern`; and the review ids removed."""
    removed: list[str] = []
    entries = []
    for e in pattern_set.entries:
        apps = tuple(p for p in e.app_patterns if not (p.learned and p.text == pattern))
        domains = tuple(p for p in e.domain_patterns if not (p.learned and p.text == pattern))
        if len(apps) != len(e.app_patterns):
            removed.append(f"app:{pattern.lower()}")
        if len(domains) != len(e.domain_patterns):
            removed.append(f"domain:{pattern.lower()}")
        entries.append(dataclasses.replace(e, app_patterns=apps, domain_patterns=domains))
    # Rebuilt from documents so that the new set gets its content version.
    return PatternSet.from_documents(PatternSet(tuple(entries)).documents()), removed


def learned_command(
    settings: Settings,
    reject: str | None,
    out: TextIO,
    *,
    approve: str | None = None,
    as_json: bool = False,
) -> int:
    """List learned and pending patterns, approve a pending one or reject one (0 ok,
    1 pattern not found, 2 store failed; MongoDB unreachable raises BackendUnavailable:
    exit 3 at the CLI's edge)."""
    return asyncio.run(_learned(settings, reject, approve, out, as_json))


async def _learned(
    settings: Settings, reject: str | None, approve: str | None, out: TextIO, as_json: bool
) -> int:
    client = async_mongo(settings)
    try:
        db = client[settings.mongo_db]
        if approve is not None:
            code, done = await _approve(db, approve, out)
        elif reject is not None:
            code, done = await _reject(db, reject, out)
        else:
            return await _list(db, out, settings.llm_learned_max, as_json)
    except (PyMongoError, ClassifierError) as exc:
        if exits.translate(exc, settings.redis_url, settings.mongo_uri) is not None:
            raise
        print(f"pattern store failed: {type(exc).__name__}", file=out)
        return 2
    finally:
        await client.close()
    if code:
        return code
    return await _announce(settings, done, out)


async def _list(
    db: AsyncDatabase[Any], out: TextIO, max_learned: int, as_json: bool = False
) -> int:
    pattern_set = await load_or_seed_patterns(db)
    review = {d["_id"]: d async for d in db[REVIEW_COLLECTION].find({})}
    rows = learned_rows(pattern_set, review)
    if as_json:
        # learnedAt: ISO text (default=str)
        write_json({"patterns": rows, "max_learned": max_learned}, out)
        return 0
    if not rows:
        print("no learned patterns", file=out)
        return 0
    for r in rows:
        when = r["learnedAt"].isoformat(timespec="seconds") if r["learnedAt"] else "-"
        verdicts = "-" if r["verdicts"] is None else r["verdicts"]
        users = "-" if r["users"] is None else r["users"]
        print(
            f"{r['status']}\t{r['category']}\t{r['kind']}\t{r['pattern']}\t{verdicts}\t{users}"
            f"\t{when}",
            file=out,
        )
    # The cap counts active and pending patterns alike (classifiers/llm/learning.py).
    full = " (full: new subjects wait until one is rejected)" if len(rows) >= max_learned else ""
    print(f"# {len(rows)} of at most {max_learned} (POMOCORE_LLM_LEARNED_MAX){full}", file=out)
    return 0


async def _pending(db: AsyncDatabase[Any], pattern: str) -> list[dict[str, Any]]:
    ids = [f"app:{pattern.lower()}", f"domain:{pattern.lower()}"]
    return [d async for d in db[REVIEW_COLLECTION].find({"_id": {"$in": ids}, "status": "pending"})]


async def _approve(db: AsyncDatabase[Any], pattern: str, out: TextIO) -> tuple[int, str]:
    pending = await _pending(db, pattern)
    if not pending:
        print(f"no pending pattern {pattern!r}", file=out)
        return 1, ""
    pattern_set = await load_or_seed_patterns(db)
    for doc in pending:  # one atomic add each: a consumer learning meanwhile keeps its own
        pattern_set = await add_learned_pattern(
            db, pattern_set, doc["category"], doc["kind"], doc["pattern"]
        )
    for doc in pending:
        await db[REVIEW_COLLECTION].update_one(
            {"_id": doc["_id"], "status": "pending"}, {"$set": {"status": "learned"}}
        )
    return 0, f"approved pattern {pattern!r}"


async def _reject(db: AsyncDatabase[Any], pattern: str, out: TextIO) -> tuple[int, str]:
    pattern_set = await load_or_seed_patterns(db)
    new_set, removed = without_learned(pattern_set, pattern)
    removed += [d["_id"] for d in await _pending(db, pattern)]
    if not removed:
        print(f"no learned pattern {pattern!r}", file=out)
        return 1, ""
    if new_set.version != pattern_set.version:
        await save_patterns(db, new_set)
    for review_id in removed:
        await db[REVIEW_COLLECTION].update_one(
            {"_id": review_id}, {"$set": {"status": "rejected", "pattern": pattern}}, upsert=True
        )
    return 0, f"rejected learned pattern {pattern!r}; it will not be learned again"


async def _announce(settings: Settings, done: str, out: TextIO) -> int:
    redis = async_redis(settings, socket_timeout=5)
    try:
        await publish_change(redis, settings.keys)
    except (ClassifierError, RedisError) as exc:
        print(
            f"{done}, but could not announce the change ({type(exc).__name__}); consumers "
            "pick it up at their next pattern poll",
            file=out,
        )
        return 0
    finally:
        await redis.aclose()
    print(done, file=out)
    return 0
