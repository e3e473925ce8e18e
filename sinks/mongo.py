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

Ids supplied by the producer are checked before anything is written (docs/guarantees.md,
"Ownership of producer-supplied ids"): one find by `_id` per batch and collection, and
only for batches that carry such ids (both finds run concurrently: one round trip of
latency). A `pomodoroUsageLogId` only updates an existing usage log of the event's own
user, never creates one; anything else is rejected with a reason, and the event leaves
the batch as a dead letter. A `categorizedDataId` only sets the classification of a
record that holds the event's (app, url, title), or of a new record; an event whose id
names another key's record is written under its derived id instead. Every such write
carries what was checked in its filter, so the write itself is the guard: when it
matches nothing (the document changed since the check) the batch is retried
(DocumentChanged) and the retry's check decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from pomocore.core.decision import ClassKey, Decision
from pomocore.core.errors import DocumentChanged, MongoWriteError, SinkError
from pomocore.core.events import FOREIGN_DOCUMENT, UNKNOWN_DOCUMENT, Event
from pomocore.core.ids import categorized_data_id, stream_tag, usage_log_id
from pomocore.core.logs import Every

log = logging.getLogger("pomocore.mongo")

CATEGORIZED_DATA = "categorized_data"
USAGE_LOG = "pomodoro_usage_log"
DUPLICATE_KEY = 11000
# Set on a usage log whose `_id` the producer gave (CONTRACT §3): the stream entry that
# wrote it, so that a second processing of that entry does not overwrite its category.
ENTRY_MARK = "streamEntryId"
# What the ownership check reads of the documents that producer-supplied ids name.
_USAGE_CHECK = {"userId": 1, ENTRY_MARK: 1, "category": 1}
_CATEGORIZED_CHECK = {"app": 1, "url": 1, "title": 1, "category": 1, "isLLMBased": 1}
# The verdicts of `usage_verdict` besides the two rejections.
UPDATE = "update"  # the event's user's log, not yet written by this entry: update it
WRITTEN = "written"  # this very entry wrote it (an earlier attempt, another consumer)
# At most one warning per this many seconds about ignored `categorizedDataId`s.
IGNORED_ID_LOG_EVERY_S = 60.0

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
    """The writes of one batch (built without I/O; the events that carry producer-supplied
    ids get theirs in `MongoSink.write`, after the ownership check)."""

    categorized: dict[ObjectId, dict[str, Any]] = field(default_factory=dict)
    # per event, in order: its usage-log write (None: not decided yet, or nothing to
    # write), its document's `_id` and its category
    usage_ops: list[Op | None] = field(default_factory=list)
    usage_ids: list[ObjectId] = field(default_factory=list)
    usage_categories: list[str] = field(default_factory=list)
    # the events that carry a producer-supplied id: (index in the batch, event, decision)
    upstream: list[tuple[int, Event, Decision]] = field(default_factory=list)
    # writes to categorized_data documents that producers named (after the check), and
    # how many of them are guarded updates (each must match its document)
    upstream_ops: list[Op] = field(default_factory=list)
    upstream_updates: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event's producer-supplied id was refused: its dead letter's reason and field."""

    reason: str
    field: str
    detail: str


@dataclass(slots=True)
class MongoOutcome:
    """What `MongoSink.write` learnt, by index of the event in the batch."""

    # usage logs written before (a retry, another consumer) under another category
    stored: dict[int, str] = field(default_factory=dict)
    # events refused by the ownership check: dead letters, no effect anywhere
    rejected: dict[int, Rejection] = field(default_factory=dict)


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
        # `categorizedDataId`s that named another key's record (the derived id was used)
        self.ignored_categorized_ids = 0
        self._ignored_log = Every(IGNORED_ID_LOG_EVERY_S)
        # categorized_data ids that a lane of this process is inserting right now, with
        # their category: the other lanes wait for that write instead of racing it.
        self._inflight: dict[ObjectId, tuple[asyncio.Future[bool], str]] = {}

    def build(self, accepted: Sequence[tuple[Event, Decision]]) -> MongoBatch:
        batch = MongoBatch()
        for index, (event, decision) in enumerate(accepted):
            if event.categorized_data_id or event.usage_log_id:
                self._build_upstream(batch, index, event, decision)
                continue
            cat_id = categorized_data_id(event.app, event.url, event.title)
            self._add_derived(batch, event, decision, cat_id)
            doc = self._usage_doc(event, decision, cat_id)
            doc["_id"] = doc_id = usage_log_id(self.tag, event.entry_id)
            batch.usage_ops.append(InsertOne(doc))
            batch.usage_ids.append(doc_id)
            batch.usage_categories.append(decision.category)
        return batch

    def _build_upstream(
        self, batch: MongoBatch, index: int, event: Event, decision: Decision
    ) -> None:
        """An event with a producer-supplied id: its writes wait for the ownership check."""
        batch.upstream.append((index, event, decision))
        if not event.categorized_data_id:
            cat_id = categorized_data_id(event.app, event.url, event.title)
            self._add_derived(batch, event, decision, cat_id)
        batch.usage_ops.append(None)
        batch.usage_ids.append(
            ObjectId(event.usage_log_id)
            if event.usage_log_id
            else usage_log_id(self.tag, event.entry_id)
        )
        batch.usage_categories.append(decision.category)

    def _add_derived(
        self, batch: MongoBatch, event: Event, decision: Decision, cat_id: ObjectId
    ) -> None:
        """The categorized_data document of the event's key under its derived id, unless
        the batch has it or memory knows it under this category."""
        if cat_id not in batch.categorized and self.known.get(cat_id) != decision.category:
            batch.categorized[cat_id] = self._categorized_doc(event, decision, cat_id)

    def _categorized_doc(
        self, event: Event, decision: Decision, cat_id: ObjectId
    ) -> dict[str, Any]:
        return {
            "_id": cat_id,
            "app": event.app,
            "url": event.url,
            "title": event.title,
            **self._classification(decision),
        }

    def _classification(self, decision: Decision) -> dict[str, Any]:
        return classification_fields(self.category_ids, decision)

    def _usage_doc(self, event: Event, decision: Decision, cat_id: ObjectId) -> dict[str, Any]:
        return {
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

    async def write(self, batch: MongoBatch) -> MongoOutcome:
        """Make the batch durable. Raises MongoWriteError (MongoDB refused the data),
        DocumentChanged (a document a producer named changed during the write: retry) or
        SinkError (MongoDB could not take it now); never half-silent.

        Returns, by index of the event in the batch, the usage logs that were already
        written (an earlier attempt, another consumer) under another category than this
        batch's (its leaderboard increments must use the stored one), and the events that
        the ownership check refused (dead letters: nothing of theirs is written).
        """
        deadline = (  # server selection, connecting and the driver's retries included
            pymongo.timeout(self.timeout_s) if self.timeout_s else contextlib.nullcontext()
        )
        out = MongoOutcome()
        try:
            with deadline:
                if batch.upstream:
                    await self._check_upstream(batch, out)
                await self._write_categorized(batch)
                await self._write_usage(batch, out)
        except PyMongoError as exc:
            raise SinkError(f"MongoDB unavailable: {type(exc).__name__}: {exc}") from exc
        return out

    async def _write_usage(self, batch: MongoBatch, out: MongoOutcome) -> None:
        """One unordered bulk write of the usage logs still to write."""
        ops: list[Op] = []
        indexes: list[int] = []  # per op: the index of its event
        for index, op in enumerate(batch.usage_ops):
            if op is not None:
                ops.append(op)
                indexes.append(index)
        if not ops:
            return
        expected = sum(1 for op in ops if isinstance(op, UpdateOne))
        duplicates, matched = await self._bulk(USAGE_LOG, ops)
        if matched < expected:
            raise DocumentChanged(
                f"{USAGE_LOG}: {expected - matched} of {expected} producer-named documents "
                "changed between the ownership check and the write"
            )
        if duplicates:
            out.stored.update(
                await self._stored_categories(batch, [indexes[d] for d in duplicates])
            )

    async def _check_upstream(self, batch: MongoBatch, out: MongoOutcome) -> None:
        """The ownership check of the producer-supplied ids: one find by `_id` per
        collection (concurrently), then each such event's writes, or its rejection."""
        usage_ids = {e.usage_log_id for _, e, _ in batch.upstream if e.usage_log_id}
        cat_ids = {e.categorized_data_id for _, e, _ in batch.upstream if e.categorized_data_id}
        logs, records = await asyncio.gather(
            self._find(USAGE_LOG, usage_ids, _USAGE_CHECK),
            self._find(CATEGORIZED_DATA, cat_ids, _CATEGORIZED_CHECK),
        )
        owners: dict[str, tuple[object, ...]] = {}  # supplied categorized id -> its key
        for index, event, decision in batch.upstream:
            if event.usage_log_id:
                stored_log = logs.get(event.usage_log_id)
                verdict = usage_verdict(stored_log, event)
                if verdict in (FOREIGN_DOCUMENT, UNKNOWN_DOCUMENT):
                    out.rejected[index] = _rejection(verdict, event.usage_log_id)
                    continue
                if verdict == WRITTEN and stored_log is not None:
                    # this very entry wrote it: nothing to write, its category decides
                    category = stored_log.get("category")
                    if category in CATEGORY_SET and category != decision.category:
                        out.stored[index] = str(category)
                    continue
            cat_id = self._categorized_for(batch, event, decision, records, owners)
            doc = self._usage_doc(event, decision, cat_id)
            if event.usage_log_id:
                batch.usage_ops[index] = _guarded_update(batch.usage_ids[index], event, doc)
            else:
                doc["_id"] = batch.usage_ids[index]
                batch.usage_ops[index] = InsertOne(doc)

    async def _find(
        self, collection: str, hex_ids: set[str], projection: Mapping[str, int]
    ) -> dict[str, Mapping[str, Any]]:
        """The documents of `hex_ids`, by the hex of their `_id` (the MongoDB-wire server
        returns the `_id` of a document it created by an upsert as a string)."""
        if not hex_ids:
            return {}
        self.round_trips += 1
        found: dict[str, Mapping[str, Any]] = {}
        cursor = self.db[collection].find(
            {"_id": {"$in": [ObjectId(i) for i in hex_ids]}},
            projection,
            batch_size=len(hex_ids),  # one reply, no getMore round trip
        )
        async for doc in cursor:
            found[str(doc["_id"])] = doc
        return found

    def _categorized_for(
        self,
        batch: MongoBatch,
        event: Event,
        decision: Decision,
        records: Mapping[str, Mapping[str, Any]],
        owners: dict[str, tuple[object, ...]],
    ) -> ObjectId:
        """The categorized_data `_id` the event's usage log names, and that record's write.

        A supplied `categorizedDataId` stands when its record holds the event's key, or
        is new (then the batch's first event with that id creates it with its key); the
        record only takes the classification, never an (app, url, title). Any other event
        is written under its key's derived id, as if it carried no id.
        """
        key: ClassKey = (event.app, event.url, event.title)
        supplied = event.categorized_data_id
        if not supplied:
            return categorized_data_id(*key)
        stored = records.get(supplied)
        if supplied not in owners:  # the batch's first event naming this record
            owners[supplied] = key if stored is None else stored_key(stored)
            if stored is None:  # a new record: created with this event's key
                batch.upstream_ops.append(
                    InsertOne(self._categorized_doc(event, decision, ObjectId(supplied)))
                )
            elif owners[supplied] == key:
                self._reclassify(batch, event, decision, stored)
        if owners[supplied] == key:
            return ObjectId(supplied)
        self._ignored_id()
        cat_id = categorized_data_id(*key)
        self._add_derived(batch, event, decision, cat_id)
        return cat_id

    def _reclassify(
        self, batch: MongoBatch, event: Event, decision: Decision, stored: Mapping[str, Any]
    ) -> None:
        """Queue the classification of a producer-named record that holds the event's key,
        where it differs, unless the LLM decided it and this decision is a rule's."""
        if stored.get("category") == decision.category:
            return
        by_llm = decision.source == "llm"
        if stored.get("isLLMBased") and not by_llm:
            return  # never overwrite a verdict of the LLM with a rule's fallback
        assert event.categorized_data_id is not None
        guard: dict[str, Any] = {
            "_id": ObjectId(event.categorized_data_id),
            "app": event.app,
            "url": event.url,
            "title": event.title,
        }
        if not by_llm:  # nor a verdict stored after the check (the MongoDB-wire server
            # stores a boolean that an update sets as 1; MongoDB keeps the two apart)
            guard["isLLMBased"] = {"$nin": [True, 1]}
        batch.upstream_ops.append(UpdateOne(guard, {"$set": self._classification(decision)}))
        batch.upstream_updates += 1

    def _ignored_id(self) -> None:
        """Count a `categorizedDataId` that named another key's record; warn now and then."""
        self.ignored_categorized_ids += 1
        if self._ignored_log.due():
            log.warning(
                "categorizedDataId names a record of another (app, url, title); "
                "the event's derived id was used instead",
                extra={"ignored_total": self.ignored_categorized_ids},
            )

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
        if not batch.categorized and not batch.upstream_ops:
            return
        inserted: list[ObjectId | None] = []  # per op: the id of a blind insert, else None
        stale: list[ObjectId] = []  # known to exist under another category
        waits: dict[ObjectId, asyncio.Future[bool]] = {}  # being inserted by another lane
        ops: list[Op] = []
        for doc_id, doc in batch.categorized.items():
            if self.known.get(doc_id) is None:  # not known to exist: insert blind
                other = self._inflight.get(doc_id)
                if other is not None and other[1] == doc["category"]:
                    waits[doc_id] = other[0]  # the same document: wait for it, don't race it
                    continue
                ops.append(InsertOne(doc))
                inserted.append(doc_id)
            else:
                stale.append(doc_id)
        if ops or batch.upstream_ops:  # the producer-named records go in the same write
            stale += await self._insert(batch, ops, inserted)
        # A lane whose insert failed leaves its documents to us: nothing we acknowledge may
        # point to a categorized_data document that is not durable.
        outcomes = await asyncio.gather(*waits.values())
        retry: list[ObjectId | None] = [i for i, ok in zip(waits, outcomes, strict=True) if not ok]
        if retry:
            ops = [InsertOne(batch.categorized[i]) for i in retry if i is not None]
            stale += await self._insert(batch, ops, retry, upstream=False)
        if stale:
            await self._update_existing(batch, stale)
        for doc_id, doc in batch.categorized.items():
            self.known.put(doc_id, doc["category"])

    async def _insert(
        self,
        batch: MongoBatch,
        ops: list[Op],
        inserted: list[ObjectId | None],
        *,
        upstream: bool = True,
    ) -> list[ObjectId]:
        """One bulk write (with the batch's writes of producer-named records, unless
        `upstream` is False), announced to the other lanes; returns the ids that existed.

        A producer-named record created or changed since the ownership check (an insert
        that meets a duplicate, a guarded update that matches nothing) raises
        DocumentChanged: the batch is retried and the retry's check decides.
        """
        extra = batch.upstream_ops if upstream else []
        loop = asyncio.get_running_loop()
        mine: dict[ObjectId, asyncio.Future[bool]] = {}
        for doc_id in inserted:
            if doc_id is not None and doc_id not in self._inflight:
                mine[doc_id] = loop.create_future()
                self._inflight[doc_id] = (mine[doc_id], batch.categorized[doc_id]["category"])
        durable = False
        try:
            duplicates, matched = await self._bulk(CATEGORIZED_DATA, ops + extra)
            durable = True
        finally:
            for doc_id, future in mine.items():
                del self._inflight[doc_id]
                future.set_result(durable)
        expected = batch.upstream_updates if upstream else 0
        if matched < expected or any(d >= len(ops) for d in duplicates):
            raise DocumentChanged(
                f"{CATEGORIZED_DATA}: a producer-named record changed between the "
                "ownership check and the write"
            )
        return [i for i in (inserted[d] for d in duplicates) if i is not None]

    async def _update_existing(self, batch: MongoBatch, doc_ids: list[ObjectId]) -> None:
        """Bring existing documents to this batch's category, unless the LLM decided them.

        A document under a key's derived id that holds another (app, url, title) was put
        there by someone else (a producer-named new record whose id a producer chose to
        be this key's, or a write older than the ownership check): it is rewritten whole,
        its verdict was for another key.
        """
        self.round_trips += 1
        stored: dict[str, Mapping[str, Any]] = {}
        cursor = self.db[CATEGORIZED_DATA].find(
            {"_id": {"$in": doc_ids}},
            {"app": 1, "url": 1, "title": 1, "category": 1, "isLLMBased": 1},
            batch_size=len(doc_ids),  # one reply, no getMore round trip
        )
        async for doc in cursor:
            stored[str(doc["_id"])] = doc
        ops: list[Op] = []
        for doc_id in doc_ids:
            doc = batch.categorized[doc_id]
            found = stored.get(str(doc_id), {})
            if stored_key(found) == (doc["app"], doc["url"], doc["title"]):
                if found.get("isLLMBased") and not doc["isLLMBased"]:
                    # The LLM (or its background reclassifier) decided this key after our
                    # batch took the no-LLM rule: never overwrite a verdict with the fallback.
                    continue
                if found.get("category") == doc["category"]:
                    continue
            fields = {k: v for k, v in doc.items() if k != "_id"}
            ops.append(UpdateOne({"_id": doc_id}, {"$set": fields}, upsert=True))
        if ops:
            await self._bulk(CATEGORIZED_DATA, ops)

    async def _bulk(self, collection: str, ops: list[Op]) -> tuple[list[int], int]:
        """Unordered bulk write; returns the indexes of ops that hit a duplicate key, and
        how many documents its updates matched."""
        self.round_trips += 1
        try:
            result = await self.db[collection].bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            return duplicates_only(collection, exc.details), int(exc.details.get("nMatched", 0))
        return [], result.matched_count


def classification_fields(category_ids: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The fields of a categorized_data document that a decision sets (CONTRACT §3): the
    category, its `categoryId` (the `_id` of its `category_pattern` document) and whether
    the LLM decided it. Shared with `pomocore patterns reclassify` (shell/reclassify.py)."""
    return {
        "categoryId": category_ids.get(decision.category),
        "category": decision.category,
        "isLLMBased": decision.source == "llm",
    }


def usage_verdict(stored: Mapping[str, Any] | None, event: Event) -> str:
    """What a `pomodoroUsageLogId` may do, given its document as the check read it (None:
    no such document): UPDATE it, nothing (WRITTEN: this very entry wrote it), or be
    refused (UNKNOWN_DOCUMENT, FOREIGN_DOCUMENT). Producer-supplied ids never create a
    usage log: derived ids are predictable (entry time and sequence), and a document
    created under one would be taken for the victim's own later (docs/guarantees.md)."""
    if stored is None:
        return UNKNOWN_DOCUMENT
    if stored.get("userId") != event.user_id:  # as the guarded write's filter compares
        return FOREIGN_DOCUMENT
    if stored.get(ENTRY_MARK) == event.entry_id:
        return WRITTEN
    return UPDATE


def stored_key(doc: Mapping[str, Any]) -> tuple[object, ...]:
    """The (app, url, title) a categorized_data document holds (None for a missing field,
    which no event's key equals, as no equality filter matches it)."""
    return (doc.get("app"), doc.get("url"), doc.get("title"))


def _rejection(reason: str, doc_hex: str) -> Rejection:
    if reason == FOREIGN_DOCUMENT:
        detail = f"usage log {doc_hex} belongs to another user"
    else:
        detail = f"no usage log {doc_hex}: a supplied id only updates an existing document"
    return Rejection(reason, "pomodoroUsageLogId", detail)


def _guarded_update(doc_id: ObjectId, event: Event, doc: dict[str, Any]) -> UpdateOne:
    """Update the event's user's usage log, unless this stream entry already wrote it.

    The filter carries what the ownership check saw: the `_id`, the event's `userId`,
    and that this entry has not written the document (`streamEntryId`). Never an upsert:
    a producer-supplied id never creates a document. When the document changed after
    the check (deleted, another user's, or written by another consumer of this entry)
    the update matches nothing, and `write` raises DocumentChanged: the retry's check
    decides. A replayed dead letter is a new entry: it updates the document. (`$nin`
    matches a document without the field on MongoDB and on the MongoDB-wire server
    alike; that server's updates match `$ne` only where the field exists.)
    """
    guard = {"_id": doc_id, "userId": event.user_id, ENTRY_MARK: {"$nin": [event.entry_id]}}
    return UpdateOne(guard, {"$set": {**doc, ENTRY_MARK: event.entry_id}}, upsert=False)


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
