"""MongoDB sink: one categorized_data document per distinct (app, url, title) and one
pomodoro_usage_log document per accepted event (CONTRACT §3).

Writes are idempotent by construction: every `_id` is deterministic (core/ids.py) or
given by the producer, inserts are unordered, and a duplicate-key error (11000) means
"already written". Any other error fails the batch, which is then not acknowledged. The
error says whether MongoDB refused the data (MongoWriteError: a poison entry, counted
towards max_deliveries) or could not take it now (SinkError: an outage, a timeout, a
write concern not satisfied; retried without counting a delivery). All the writes of one
batch share one deadline (`timeout_s`), so a stalled MongoDB fails an attempt in bounded time.

Round trips per batch, insert first: keys not known in memory are inserted blind (one
write); usage logs are one write. Only keys that turn out to exist already (a duplicate
key on that insert), or that memory knows under another category (a pattern reload),
are read back and updated where their stored category differs: at most one read and one
update more, and only for batches that carry such keys. A verdict of the LLM stored in a
document is never overwritten by a rule's fallback.

The usage log written first decides an event's category (docs/guarantees.md, "One category
per event"): a retry or another consumer may classify the event differently, so the usage
logs that turn out to exist already are read back (by `_id`, one find for the batch) and
`write` returns their stored categories for the batch's leaderboard increments.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import InsertOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from pomocore.core.categories import CATEGORY_SET
from pomocore.core.decision import Decision
from pomocore.core.errors import MongoWriteError, SinkError
from pomocore.core.events import Event
from pomocore.core.ids import categorized_data_id, stream_tag, usage_log_id

CATEGORIZED_DATA = "categorized_data"
USAGE_LOG = "pomodoro_usage_log"
DUPLICATE_KEY = 11000
# Set on a usage log whose `_id` the producer gave (CONTRACT §3): the stream entry that
# wrote it, so that a second processing of that entry does not overwrite its category.
ENTRY_MARK = "streamEntryId"

# Write errors that say "not now" rather than "not this data": the server is stepping down,
# shutting down or unreachable from where it stands, or the operation ran out of time
# (the retryable-writes codes of the MongoDB drivers' specification, plus the timeouts
# and a write conflict). Retrying the same batch later succeeds.
TRANSIENT_WRITE_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        50,  # MaxTimeMSExpired (our deadline, sent as maxTimeMS)
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10058,  # LegacyNotPrimary
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
_NOT_REFUSED = TRANSIENT_WRITE_CODES | {DUPLICATE_KEY}

Op = InsertOne[dict[str, Any]] | UpdateOne


@dataclass(slots=True)
class MongoBatch:
    """The writes of one batch (built without I/O)."""

    categorized: dict[ObjectId, dict[str, Any]] = field(default_factory=dict)
    upstream_categorized: set[ObjectId] = field(default_factory=set)
    usage_ops: list[Op] = field(default_factory=list)
    # per usage op (the batch's events, in order): its document's `_id` and category
    usage_ids: list[ObjectId] = field(default_factory=list)
    usage_categories: list[str] = field(default_factory=list)


class KnownIds:
    """Bounded memory of categorized_data ids known to exist with a given category."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._ids: OrderedDict[ObjectId, str] = OrderedDict()

    def get(self, doc_id: ObjectId) -> str | None:
        category = self._ids.get(doc_id)
        if category is not None:
            self._ids.move_to_end(doc_id)
        return category

    def put(self, doc_id: ObjectId, category: str) -> None:
        self._ids[doc_id] = category
        self._ids.move_to_end(doc_id)
        while len(self._ids) > self.max_size:
            self._ids.popitem(last=False)


class MongoSink:
    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        stream_key: str,
        category_ids: Mapping[str, Any],
        known_ids_size: int = 200_000,
        timeout_s: float | None = None,
    ) -> None:
        self.db = db
        self.timeout_s = timeout_s  # one deadline for all the writes of a batch
        self.tag = stream_tag(stream_key)
        self.category_ids = category_ids
        self.known = KnownIds(known_ids_size)
        self.round_trips = 0
        # categorized_data ids that a lane of this process is inserting right now, with
        # their category: the other lanes wait for that write instead of racing it.
        self._inflight: dict[ObjectId, tuple[asyncio.Future[bool], str]] = {}

    def build(self, accepted: Sequence[tuple[Event, Decision]]) -> MongoBatch:
        batch = MongoBatch()
        for event, decision in accepted:
            cat_id = self._categorized_id(event)
            if cat_id not in batch.categorized and self.known.get(cat_id) != decision.category:
                batch.categorized[cat_id] = self._categorized_doc(event, decision, cat_id)
                if event.categorized_data_id:
                    batch.upstream_categorized.add(cat_id)
            op, usage_id = self._usage_op(event, decision, cat_id)
            batch.usage_ops.append(op)
            batch.usage_ids.append(usage_id)
            batch.usage_categories.append(decision.category)
        return batch

    def _categorized_id(self, event: Event) -> ObjectId:
        if event.categorized_data_id:
            return ObjectId(event.categorized_data_id)
        return categorized_data_id(event.app, event.url, event.title)

    def _categorized_doc(
        self, event: Event, decision: Decision, cat_id: ObjectId
    ) -> dict[str, Any]:
        return {
            "_id": cat_id,
            "app": event.app,
            "url": event.url,
            "title": event.title,
            "categoryId": self.category_ids.get(decision.category),
            "category": decision.category,
            "isLLMBased": decision.source == "llm",
        }

    def _usage_op(
        self, event: Event, decision: Decision, cat_id: ObjectId
    ) -> tuple[Op, ObjectId]:
        doc = {
            "userId": event.user_id,
            "categorizedDataId": cat_id,
            "categoryId": self.category_ids.get(decision.category),
            "category": decision.category,
            "session": event.session,
            "sessionMinutes": event.session_minutes,
            "sessionDate": event.session_date,
            "timestamp": event.timestamp_s,
            "duration": event.duration_s,
        }
        if event.usage_log_id:  # the producer created it upstream: update that document
            return _first_update(ObjectId(event.usage_log_id), event.entry_id, doc)
        doc["_id"] = doc_id = usage_log_id(self.tag, event.entry_id)
        return InsertOne(doc), doc_id

    async def write(self, batch: MongoBatch) -> dict[int, str]:
        """Make the batch durable. Raises MongoWriteError (MongoDB refused the data) or
        SinkError (MongoDB could not take it now); never half-silent.

        Returns the usage logs that were already written (an earlier attempt, another
        consumer) under another category than this batch's: index of the event in the
        batch -> the stored category, which its leaderboard increments must use.
        """
        deadline = (  # server selection, connecting and the driver's retries included
            pymongo.timeout(self.timeout_s) if self.timeout_s else contextlib.nullcontext()
        )
        try:
            with deadline:
                await self._write_categorized(batch)
                if not batch.usage_ops:
                    return {}
                duplicates = await self._bulk(USAGE_LOG, batch.usage_ops)
                return await self._stored_categories(batch, duplicates) if duplicates else {}
        except PyMongoError as exc:
            raise SinkError(f"MongoDB unavailable: {type(exc).__name__}: {exc}") from exc

    async def _stored_categories(self, batch: MongoBatch, duplicates: list[int]) -> dict[int, str]:
        """The categories of the usage logs that existed, where they differ from ours.

        One find by `_id`, for the duplicates only: the MongoDB-wire server answers it
        from its primary key. A document whose category is not one of the taxonomy (not
        written by pomocore) leaves the event with this batch's category: a stored value
        never becomes a leaderboard key name unchecked.
        """
        self.round_trips += 1
        wanted = list(dict.fromkeys(batch.usage_ids[i] for i in duplicates))
        stored: dict[str, str] = {}  # by the id's hex: the MongoDB-wire server returns the
        # `_id` of a document it created by an upsert as a string
        cursor = self.db[USAGE_LOG].find(
            {"_id": {"$in": wanted}}, {"category": 1}, batch_size=len(wanted)
        )
        async for doc in cursor:
            category = doc.get("category")
            if category in CATEGORY_SET:
                stored[str(doc["_id"])] = category
        out: dict[int, str] = {}
        for index in duplicates:
            category = stored.get(str(batch.usage_ids[index]))
            if category is not None and category != batch.usage_categories[index]:
                out[index] = category
        return out

    async def _write_categorized(self, batch: MongoBatch) -> None:
        if not batch.categorized:
            return
        inserted: list[ObjectId | None] = []  # per op: the id of a blind insert, else None
        stale: list[ObjectId] = []  # known to exist under another category
        waits: dict[ObjectId, asyncio.Future[bool]] = {}  # being inserted by another lane
        ops: list[Op] = []
        for doc_id, doc in batch.categorized.items():
            if doc_id in batch.upstream_categorized:  # the producer's id: update in place
                fields = {k: v for k, v in doc.items() if k != "_id"}
                ops.append(UpdateOne({"_id": doc_id}, {"$set": fields}, upsert=True))
                inserted.append(None)
            elif self.known.get(doc_id) is None:  # not known to exist: insert blind
                other = self._inflight.get(doc_id)
                if other is not None and other[1] == doc["category"]:
                    waits[doc_id] = other[0]  # the same document: wait for it, don't race it
                    continue
                ops.append(InsertOne(doc))
                inserted.append(doc_id)
            else:
                stale.append(doc_id)
        if ops:
            stale += await self._insert(batch, ops, inserted)
        # A lane whose insert failed leaves its documents to us: nothing we acknowledge may
        # point to a categorized_data document that is not durable.
        outcomes = await asyncio.gather(*waits.values())
        retry: list[ObjectId | None] = [i for i, ok in zip(waits, outcomes, strict=True) if not ok]
        if retry:
            ops = [InsertOne(batch.categorized[i]) for i in retry if i is not None]
            stale += await self._insert(batch, ops, retry)
        if stale:
            await self._update_existing(batch, stale)
        for doc_id, doc in batch.categorized.items():
            self.known.put(doc_id, doc["category"])

    async def _insert(
        self, batch: MongoBatch, ops: list[Op], inserted: list[ObjectId | None]
    ) -> list[ObjectId]:
        """One bulk write, announced to the other lanes; returns the ids that existed."""
        loop = asyncio.get_running_loop()
        mine: dict[ObjectId, asyncio.Future[bool]] = {}
        for doc_id in inserted:
            if doc_id is not None and doc_id not in self._inflight:
                mine[doc_id] = loop.create_future()
                self._inflight[doc_id] = (mine[doc_id], batch.categorized[doc_id]["category"])
        durable = False
        try:
            duplicates = await self._bulk(CATEGORIZED_DATA, ops)
            durable = True
        finally:
            for doc_id, future in mine.items():
                del self._inflight[doc_id]
                future.set_result(durable)
        return [i for i in (inserted[d] for d in duplicates) if i is not None]

    async def _update_existing(self, batch: MongoBatch, doc_ids: list[ObjectId]) -> None:
        """Bring existing documents to this batch's category, unless the LLM decided them."""
        self.round_trips += 1
        stored: dict[ObjectId, tuple[str, bool]] = {}
        cursor = self.db[CATEGORIZED_DATA].find(
            {"_id": {"$in": doc_ids}},
            {"category": 1, "isLLMBased": 1},
            batch_size=len(doc_ids),  # one reply, no getMore round trip
        )
        async for doc in cursor:
            stored[doc["_id"]] = (doc.get("category", ""), bool(doc.get("isLLMBased")))
        ops: list[Op] = []
        for doc_id in doc_ids:
            doc = batch.categorized[doc_id]
            category, llm_decided = stored.get(doc_id, ("", False))
            if llm_decided and not doc["isLLMBased"]:
                # The LLM (or its background reclassifier) decided this key after our batch
                # took the no-LLM rule: never overwrite a verdict with the fallback.
                continue
            if category != doc["category"]:
                fields = {k: v for k, v in doc.items() if k != "_id"}
                ops.append(UpdateOne({"_id": doc_id}, {"$set": fields}, upsert=True))
        if ops:
            await self._bulk(CATEGORIZED_DATA, ops)

    async def _bulk(self, collection: str, ops: list[Op]) -> list[int]:
        """Unordered bulk write; returns the indexes of ops that hit a duplicate key."""
        self.round_trips += 1
        try:
            await self.db[collection].bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            return duplicates_only(collection, exc.details)
        return []


def _first_update(doc_id: ObjectId, entry_id: str, doc: dict[str, Any]) -> tuple[Op, ObjectId]:
    """Update the producer's usage log, unless this stream entry already wrote it.

    A retry or a second consumer of the same entry then misses the filter, and its upsert
    collides with the `_id`: a duplicate key, read back like an insert's. A replayed dead
    letter is a new entry: it updates the document. (`$nin` matches a document without
    the field on MongoDB and on the MongoDB-wire server alike; that server's updates
    match `$ne` only where the field exists, and ignore `_id` beside an `$or`.)
    """
    not_mine = {"_id": doc_id, ENTRY_MARK: {"$nin": [entry_id]}}
    return UpdateOne(not_mine, {"$set": {**doc, ENTRY_MARK: entry_id}}, upsert=True), doc_id


def duplicates_only(collection: str, details: Mapping[str, Any]) -> list[int]:
    """The indexes of the ops of a failed bulk write that hit a duplicate key, when
    nothing else failed; else MongoWriteError (refused data: a write error that will come
    back) or SinkError (not now: see TRANSIENT_WRITE_CODES; and any write concern error,
    e.g. wtimeout, code 64, secondaries down: the primary applied the write, so it is
    never refused data)."""
    errors = details.get("writeErrors", [])
    concern = details.get("writeConcernErrors", [])
    refused = [e for e in errors if e.get("code") not in _NOT_REFUSED]
    if refused:
        raise MongoWriteError(_describe(collection, refused, errors, concern))
    not_now = [e for e in errors if e.get("code") in TRANSIENT_WRITE_CODES] + concern
    if not_now:
        raise SinkError(_describe(collection, not_now, errors, concern))
    return sorted(int(e["index"]) for e in errors)


def _describe(collection: str, first: list[Any], errors: list[Any], concern: list[Any]) -> str:
    code, message = first[0].get("code"), str(first[0].get("errmsg", ""))[:200]
    return (
        f"{collection}: {len(errors)} write errors, {len(concern)} write concern errors; "
        f"first: code {code} {message}"
    )
