"""`pomocore patterns learned [--reject PATTERN]`: review the patterns the LLM layer learned."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, TextIO

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from pomocore.classifiers.llm.learning import REVIEW_COLLECTION
from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.store import load_or_seed_patterns, publish_change, save_patterns
from pomocore.core.connect import async_redis
from pomocore.core.errors import ClassifierError
from pomocore.core.settings import Settings


def learned_rows(
    pattern_set: PatternSet, review: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """(category, kind, pattern, verdicts, learnedAt) of every learned entry in the set."""
    rows: list[dict[str, Any]] = []
    for entry in pattern_set.entries:
        for kind, patterns in (("app", entry.app_patterns), ("domain", entry.domain_patterns)):
            for p in patterns:
                if p.learned:
                    meta = review.get(f"{kind}:{p.text.lower()}", {})
                    rows.append(
                        {
                            "category": entry.category,
                            "kind": kind,
                            "pattern": p.text,
                            "verdicts": meta.get("verdicts"),
                            "learnedAt": meta.get("learnedAt"),
                        }
                    )
    return rows


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


def learned_command(settings: Settings, reject: str | None, out: TextIO) -> int:
    """List learned patterns, or reject one (0 ok, 1 pattern not found, 2 store unreachable)."""
    return asyncio.run(_learned(settings, reject, out))


async def _learned(settings: Settings, reject: str | None, out: TextIO) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_uri, serverSelectionTimeoutMS=5000
    )
    try:
        db = client[settings.mongo_db]
        pattern_set = await load_or_seed_patterns(db)
        review = {d["_id"]: d async for d in db[REVIEW_COLLECTION].find({})}
        if reject is None:
            rows = learned_rows(pattern_set, review)
            if not rows:
                print("no learned patterns", file=out)
            for r in rows:
                when = r["learnedAt"].isoformat(timespec="seconds") if r["learnedAt"] else "-"
                verdicts = "-" if r["verdicts"] is None else r["verdicts"]
                print(f"{r['category']}\t{r['kind']}\t{r['pattern']}\t{verdicts}\t{when}", file=out)
            return 0
        new_set, removed = without_learned(pattern_set, reject)
        if not removed:
            print(f"no learned pattern {reject!r}", file=out)
            return 1
        await save_patterns(db, new_set)
        for review_id in removed:
            await db[REVIEW_COLLECTION].update_one(
                {"_id": review_id}, {"$set": {"status": "rejected", "pattern": reject}}, upsert=True
            )
    except (PyMongoError, ClassifierError) as exc:
        print(f"pattern store unavailable: {type(exc).__name__}", file=out)
        return 2
    finally:
        await client.close()
    redis = async_redis(settings, socket_timeout=5)
    try:
        await publish_change(redis, settings.keys)
    except (ClassifierError, RedisError) as exc:
        print(f"rejected, but could not announce the change ({type(exc).__name__}); consumers "
              "pick it up at their next pattern poll", file=out)
        return 0
    finally:
        await redis.aclose()
    print(f"rejected learned pattern {reject!r}; it will not be learned again", file=out)
    return 0
