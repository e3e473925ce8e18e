"""The MongoDB indexes pomocore's own queries need, created at start-up (idempotently).

`QUERIES` lists every query shape the code sends (the filter's fields, where it is sent
from); `INDEXES` the secondary indexes that serve the shapes `_id` does not.
tests/core/test_indexes.py checks both ways: every call site in the code is a listed shape,
and every shape is served by `_id` or by an index whose leading keys are the shape's
equality fields followed by its range field. docs/operations.md "MongoDB indexes" lists
them for operators.

`ensure_indexes` runs when a consumer starts: it creates the indexes whose key pattern
the collection lacks (under any name: an index an operator made already counts), so a
restart, or N consumers starting together, changes nothing. On MongoDB that is a
createIndexes per collection with missing indexes, built without blocking writes
(MongoDB ≥ 4.2 builds hold an exclusive lock only at the start and the end).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from pomocore.classifiers.llm.learning import REVIEW_COLLECTION
from pomocore.classifiers.patterns import COLLECTION as PATTERNS
from pomocore.sinks.mongo import CATEGORIZED_DATA, ENTRY_MARK, USAGE_LOG

log = logging.getLogger("pomocore.indexes")

# MongoDB's codes for an index that exists with other options or another name.
INDEX_CONFLICT_CODES = frozenset({85, 86})

Keys = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Index:
    collection: str
    keys: Keys
    name: str
    why: str


@dataclass(frozen=True)
class Query:
    """One query shape: equality (or `$in`) fields, at most one range field, the call site
    (`path::function`) and, for a scan the code means to do, why it is one."""

    collection: str
    equality: tuple[str, ...]
    where: str
    range: str | None = None
    scan: str | None = None  # a deliberate full read (every document is wanted)


INDEXES: tuple[Index, ...] = (
    Index(
        USAGE_LOG,
        (("timestamp", ASCENDING),),
        "pomocore_timestamp",
        "`leaderboard rebuild --from-mongo` reads the usage logs of a time range",
    ),
    Index(
        USAGE_LOG,
        (("userId", ASCENDING), ("timestamp", ASCENDING)),
        "pomocore_user_timestamp",
        "one user's logs over a time range (the applications' per-user history)",
    ),
    Index(
        REVIEW_COLLECTION,
        (("status", ASCENDING),),
        "pomocore_status",
        "the learner counts the pending reviews before each learned pattern",
    ),
    Index(
        PATTERNS,
        (("category", ASCENDING),),
        "pomocore_category",
        "`patterns load` finds the documents of the categories it replaces",
    ),
)

QUERIES: tuple[Query, ...] = (
    Query(USAGE_LOG, (), "shell/rebuild.py::usage_logs", range="timestamp"),
    Query(USAGE_LOG, ("_id",), "shell/dlq.py::owned"),
    Query(USAGE_LOG, ("_id",), "sinks/mongo.py::_stored_categories"),
    Query(USAGE_LOG, ("_id", "userId", ENTRY_MARK), "sinks/mongo.py::_guarded_update"),
    Query(CATEGORIZED_DATA, ("_id",), "sinks/mongo.py::_find"),
    Query(CATEGORIZED_DATA, ("_id", "app", "url", "title"), "sinks/mongo.py::_reclassify"),
    Query(CATEGORIZED_DATA, ("_id",), "sinks/mongo.py::_update_existing"),
    Query(CATEGORIZED_DATA, ("_id",), "classifiers/llm/reclassifier.py::_correct"),
    Query(CATEGORIZED_DATA, ("_id", "isLLMBased"), "classifiers/llm/resolver.py::_recall_db"),
    Query(CATEGORIZED_DATA, (), "shell/reclassify.py::run", range="_id"),
    Query(
        CATEGORIZED_DATA,
        ("_id", "app", "url", "title", "category", "isLLMBased"),
        "shell/reclassify.py::guarded_update",
    ),
    Query(CATEGORIZED_DATA, ("_id", "category", "categoryId"), "shell/reclassify.py::relink"),
    Query(
        CATEGORIZED_DATA,
        (),
        "shell/demo.py::_classification_counts",
        scan="the demo's own small database",
    ),
    Query(REVIEW_COLLECTION, ("_id", "status"), "classifiers/llm/learning.py::_save"),
    Query(REVIEW_COLLECTION, ("status",), "classifiers/llm/learning.py::_learned_count"),
    Query(REVIEW_COLLECTION, (), "shell/learned_cli.py::_list", scan="every review is listed"),
    Query(REVIEW_COLLECTION, ("_id", "status"), "shell/learned_cli.py::_pending"),
    Query(REVIEW_COLLECTION, ("_id", "status"), "shell/learned_cli.py::_approve"),
    Query(REVIEW_COLLECTION, ("_id",), "shell/learned_cli.py::_reject"),
    Query(PATTERNS, (), "classifiers/store.py::_stored_documents", scan="every pattern is loaded"),
    Query(PATTERNS, ("category",), "classifiers/store.py::save_patterns"),
    Query(PATTERNS, ("_id",), "classifiers/store.py::save_patterns"),
    Query(PATTERNS, ("_id", "category"), "classifiers/store.py::add_learned_pattern"),
)


def serving_index(query: Query) -> Index | Literal["_id", "scan"] | None:
    """What serves `query`: `_id` (an equality on the primary key, or a range on it
    alone), an index of INDEXES whose leading keys are the equality fields then the range
    field, `scan` for a deliberate full read, None when nothing does (a collection scan by
    accident)."""
    if query.scan:
        return "scan"
    if "_id" in query.equality or (not query.equality and query.range == "_id"):
        return "_id"  # the primary key: an equality, or a walk in `_id` order
    wanted = set(query.equality)
    for index in INDEXES:
        if index.collection != query.collection:
            continue
        fields = [name for name, _ in index.keys]
        head = fields[: len(wanted)]
        if set(head) != wanted:
            continue
        rest = fields[len(wanted) :]
        if query.range is None or (rest and rest[0] == query.range):
            return index
    return None


def _key(spec: Any) -> Keys:
    return tuple((str(name), int(direction)) for name, direction in dict(spec).items())


async def ensure_indexes(db: AsyncDatabase[Any]) -> list[str]:
    """Create the INDEXES a collection lacks (by key pattern); the names created."""
    created: list[str] = []
    for collection in dict.fromkeys(i.collection for i in INDEXES):
        existing = {_key(spec["key"]) async for spec in await db[collection].list_indexes()}
        missing = [i for i in INDEXES if i.collection == collection and i.keys not in existing]
        if not missing:
            continue
        models = [IndexModel(list(i.keys), name=i.name) for i in missing]
        try:
            created += await db[collection].create_indexes(models)
        except OperationFailure as exc:
            if exc.code not in INDEX_CONFLICT_CODES:
                raise
            # an index with these keys and other options (unique, collation...) exists
            # under our name: the operator's choice stands; the queries still use it
            log.warning(
                "index not created: one with the same name or keys exists with other options",
                extra={"collection": collection, "error": str(exc)[:200]},
            )
    if created:
        log.info("MongoDB indexes created", extra={"indexes": created})
    return created
