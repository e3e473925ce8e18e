"""Patterns in MongoDB (`category_pattern`) and the change notification in Redis."""

from __future__ import annotations

import logging
from typing import Any

from pymongo import ReplaceOne
from pymongo.errors import PyMongoError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pomocore.classifiers.patterns import (
    COLLECTION,
    PatternKind,
    PatternSet,
    load_default_pattern_set,
)
from pomocore.core.categories import canonical
from pomocore.core.errors import ClassifierError
from pomocore.core.keys import KeySpace

log = logging.getLogger(__name__)


async def _stored_documents(db: Any) -> list[dict[str, Any]]:
    try:
        docs: list[dict[str, Any]] = await db[COLLECTION].find({}).to_list(None)
    except PyMongoError as exc:
        raise ClassifierError(f"cannot read {COLLECTION}: {exc}") from exc
    return docs


async def read_stored_patterns(db: Any) -> PatternSet | None:
    """The set stored in MongoDB, None when the collection is empty; writes nothing
    (commands that only look, such as `patterns export` and `patterns check`).

    Raises ClassifierError when MongoDB fails or a document is invalid.
    """
    docs = await _stored_documents(db)
    return PatternSet.from_documents(docs) if docs else None


async def load_or_seed_patterns(db: Any) -> PatternSet:
    """The set stored in MongoDB, which a consumer classifies with: an empty collection is
    seeded with the default set, and a category without a document gets one (its `_id`
    is the categoryId written with every classification).

    Raises ClassifierError when MongoDB fails or a document is invalid.
    """
    docs = await _stored_documents(db)
    if not docs:
        default = load_default_pattern_set()
        await save_patterns(db, default)
        log.info("seeded %s with the default pattern set %s", COLLECTION, default.version)
        return default
    pattern_set = PatternSet.from_documents(docs)
    if len(docs) < len(pattern_set.entries):
        await save_patterns(db, pattern_set)  # every category needs a doc for its categoryId
    return pattern_set


async def save_patterns(db: Any, pattern_set: PatternSet) -> None:
    """Upsert one document per category by `_id` (idempotent).

    A category stored under another `_id` is replaced by its document in `pattern_set`,
    so that `category` stays unique in the collection.
    """
    coll = db[COLLECTION]
    try:
        names = [e.category for e in pattern_set.entries]
        stale = await coll.find({"category": {"$in": names}}, {"_id": 1, "category": 1}).to_list(
            None
        )
        wanted = {e.category: e.id for e in pattern_set.entries}
        for doc in stale:
            if doc["_id"] != wanted.get(doc.get("category")):
                await coll.delete_one({"_id": doc["_id"]})
        ops = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in pattern_set.documents()]
        await coll.bulk_write(ops, ordered=True)
    except PyMongoError as exc:
        raise ClassifierError(f"cannot write {COLLECTION}: {exc}") from exc


async def add_learned_pattern(
    db: Any, pattern_set: PatternSet, category: str, kind: PatternKind, pattern: str
) -> PatternSet:
    """Add one learned pattern to its category's document in one atomic update
    (`$addToSet`), and return `pattern_set` with it.

    No read-modify-write of the document: another process learning another pattern at the
    same moment, or an operator approving one, keeps theirs (saving a whole set read
    earlier would overwrite them). When the category has no document yet, the whole set is
    saved (the first learned pattern of a fresh store).
    """
    new_set = pattern_set.with_pattern(category, kind, pattern)  # (validates, cleans)
    entry = new_set.get(canonical(category) or category)  # (with_pattern checked the name)
    added = (entry.app_patterns if kind == "app" else entry.domain_patterns)[-1]
    field = "appPatterns" if kind == "app" else "domainPatterns"
    try:
        result = await db[COLLECTION].update_one(
            {"_id": entry.id, "category": entry.category},
            {"$addToSet": {field: added.to_document()}},
        )
    except PyMongoError as exc:
        raise ClassifierError(f"cannot write {COLLECTION}: {exc}") from exc
    if not result.matched_count:
        await save_patterns(db, new_set)
    return new_set


async def publish_change(redis: Redis, keys: KeySpace) -> int:
    """Bump the version counter and announce it; returns the new version."""
    try:
        version = int(await redis.incr(keys.patterns_version_key))
        # PUBLISH as a command: redis-py's async RedisCluster has no publish() before 6.x
        # (the floor, 5.3); as a command it goes to one node, which forwards it to all.
        client: Any = redis  # (execute_command is untyped in redis-py)
        await client.execute_command("PUBLISH", keys.patterns_channel, str(version))
    except RedisError as exc:
        raise ClassifierError(f"cannot announce the pattern change: {exc}") from exc
    return version
