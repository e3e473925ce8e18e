"""Ownership of producer-supplied ids in the MongoDB sink, against the real MongoDB-wire
server: a `pomodoroUsageLogId` only updates an existing usage log of the event's own
user; a `categorizedDataId` only classifies a record of the event's (app, url, title)
(docs/guarantees.md, "Ownership of producer-supplied ids")."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.core.decision import Decision, Source
from pomocore.core.errors import DocumentChanged
from pomocore.core.events import FOREIGN_DOCUMENT, UNKNOWN_DOCUMENT, Event
from pomocore.core.ids import categorized_data_id, stream_tag, usage_log_id
from pomocore.sinks.mongo import (
    CATEGORIZED_DATA,
    ENTRY_MARK,
    UPDATE,
    USAGE_LOG,
    WRITTEN,
    MongoSink,
    usage_verdict,
)

STREAM = "pomocore:events"
CATEGORY_IDS = {"Development": 1, "Entertainment": 2, "Uncategorized": 3, "Finance": 4}
DEV = Decision("Development", "app", "x")


@pytest.fixture
async def db(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    yield client[mongo_db_name]
    await client.drop_database(mongo_db_name)
    await client.close()


@pytest.fixture
def sync_db(mongo_uri: str, mongo_db_name: str) -> Any:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    yield client[mongo_db_name]
    client.close()


def sink(db: AsyncDatabase[dict[str, Any]]) -> MongoSink:
    return MongoSink(db, STREAM, CATEGORY_IDS)


def event(n: int, user: str = "alice", title: str = "a.py", **ids: str) -> Event:
    return Event(
        f"{1_700_000_000_000 + n}-0", user, "Code", title, "", 10.0 + n, 1.7e9,
        categorized_data_id=ids.get("cat"), usage_log_id=ids.get("log"),
    )  # fmt: skip


def upstream_log(sync_db: Any, user: str, **extra: Any) -> str:
    """A usage log the producer created upstream (CONTRACT §1), as its hex id."""
    return str(sync_db[USAGE_LOG].insert_one({"userId": user, "duration": 0, **extra}).inserted_id)


# --- the verdict, as a table ------------------------------------------------------------

VERDICTS: list[tuple[Mapping[str, Any] | None, str]] = [
    (None, UNKNOWN_DOCUMENT),
    ({"userId": "bob"}, FOREIGN_DOCUMENT),
    ({}, FOREIGN_DOCUMENT),  # no owner: nobody's, so not the event's user's
    ({"userId": 7}, FOREIGN_DOCUMENT),  # compared as the filter compares: type and value
    ({"userId": "ALICE"}, FOREIGN_DOCUMENT),
    ({"userId": "alice"}, UPDATE),
    ({"userId": "alice", ENTRY_MARK: "1-0"}, UPDATE),  # another entry wrote it
    ({"userId": "alice", ENTRY_MARK: "1700000000001-0"}, WRITTEN),  # this entry did
    ({"userId": "bob", ENTRY_MARK: "1700000000001-0"}, FOREIGN_DOCUMENT),
]


@pytest.mark.parametrize(("stored", "verdict"), VERDICTS)
def test_usage_verdict(stored: Mapping[str, Any] | None, verdict: str) -> None:
    assert usage_verdict(stored, event(1)) == verdict


# --- pomodoroUsageLogId -----------------------------------------------------------------


async def test_foreign_and_unknown_usage_logs_are_refused_and_the_rest_is_written(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    victim = upstream_log(sync_db, "bob", category="Finance")
    unknown = str(ObjectId())
    mine = upstream_log(sync_db, "alice")
    batch = [
        (event(1, log=victim), DEV),  # alice names bob's log
        (event(2, log=unknown), DEV),  # a log that does not exist
        (event(3, log=mine), DEV),  # her own
        (event(4), DEV),  # no supplied id
    ]
    s = sink(db)
    out = await s.write(s.build(batch))
    assert {i: r.reason for i, r in out.rejected.items()} == {
        0: FOREIGN_DOCUMENT,
        1: UNKNOWN_DOCUMENT,
    }
    assert out.rejected[0].field == "pomodoroUsageLogId"
    assert "bob" not in out.rejected[0].detail  # the dead letter names no other user
    assert sync_db[USAGE_LOG].find_one({"_id": ObjectId(victim)}) == {
        "_id": ObjectId(victim), "userId": "bob", "duration": 0, "category": "Finance",
    }  # fmt: skip
    assert sync_db[USAGE_LOG].count_documents({"_id": ObjectId(unknown)}) == 0  # not created
    own = sync_db[USAGE_LOG].find_one({"_id": ObjectId(mine)})
    assert own["duration"] == 13.0 and own[ENTRY_MARK] == event(3).entry_id
    assert own["category"] == "Development"
    derived = usage_log_id(stream_tag(STREAM), event(4).entry_id)
    assert sync_db[USAGE_LOG].find_one({"_id": derived})["userId"] == "alice"
    assert sync_db[USAGE_LOG].count_documents({}) == 3


async def test_the_check_costs_one_read_and_only_with_supplied_ids(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    s = sink(db)
    await s.write(s.build([(event(1), DEV), (event(2, title="b.py"), DEV)]))
    assert s.round_trips == 2  # as before: one insert per collection, no read
    logs = [upstream_log(sync_db, "alice") for _ in range(3)]
    await s.write(s.build([(event(10 + i, log=log), DEV) for i, log in enumerate(logs)]))
    # one find for the batch's three ids (not one per event), and the usage-log write
    assert s.round_trips == 2 + 2


async def test_a_retry_of_the_same_entry_neither_writes_again_nor_is_refused(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    """The entry's first attempt wrote its user's log (then its commit failed); the retry,
    in a fresh consumer, finds the log written by this entry: not refused, not rewritten,
    and the stored category decides the retry's increments."""
    mine = upstream_log(sync_db, "alice")
    first = sink(db)
    await first.write(first.build([(event(1, log=mine), DEV)]))
    retry = sink(db)
    games = Decision("Entertainment", "app", "x")  # the retry classifies differently
    out = await retry.write(retry.build([(event(1, log=mine), games)]))
    assert out.rejected == {}
    assert out.stored == {0: "Development"}
    doc = sync_db[USAGE_LOG].find_one({"_id": ObjectId(mine)})
    assert doc["category"] == "Development" and doc[ENTRY_MARK] == event(1).entry_id
    assert doc["duration"] == event(1).duration_s


async def test_a_future_derived_id_cannot_be_taken(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    """Derived usage-log ids are predictable (entry time and sequence): mallory names the
    id of an entry that alice will write later. Refused (nothing created), and alice's
    event, when it comes, writes its own log."""
    future = event(50)
    squat = str(usage_log_id(stream_tag(STREAM), future.entry_id))
    s = sink(db)
    out = await s.write(s.build([(event(1, user="mallory", log=squat), DEV)]))
    assert out.rejected[0].reason == UNKNOWN_DOCUMENT
    assert sync_db[USAGE_LOG].count_documents({}) == 0
    out = await s.write(s.build([(future, DEV)]))
    assert out.rejected == {} and out.stored == {}
    doc = sync_db[USAGE_LOG].find_one({"_id": ObjectId(squat)})
    assert doc["userId"] == "alice" and doc["duration"] == future.duration_s


class RacingSink(MongoSink):
    """The check reads the documents; then `race` changes them, before the write."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], race: Any) -> None:
        super().__init__(db, STREAM, CATEGORY_IDS)
        self.race = race

    async def _find(
        self, collection: str, hex_ids: set[str], projection: Mapping[str, int]
    ) -> dict[str, Mapping[str, Any]]:
        found = await super()._find(collection, hex_ids, projection)
        if hex_ids and self.race is not None:
            await self.race(collection)
            self.race = None
        return found


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"$set": {"userId": "bob"}}, FOREIGN_DOCUMENT),
        (None, UNKNOWN_DOCUMENT),  # deleted
    ],
)
async def test_a_usage_log_changed_after_the_check_is_decided_by_the_retry(
    db: AsyncDatabase[dict[str, Any]],
    sync_db: Any,
    change: dict[str, Any] | None,
    reason: str,
) -> None:
    """The write carries the checked owner in its filter: it matches nothing, the batch
    is retried (DocumentChanged), and the retry's check dead-letters the event."""
    mine = upstream_log(sync_db, "alice")

    async def race(collection: str) -> None:
        if collection == USAGE_LOG:
            if change is None:
                await db[USAGE_LOG].delete_one({"_id": ObjectId(mine)})
            else:
                await db[USAGE_LOG].update_one({"_id": ObjectId(mine)}, change)

    batch = [(event(1, log=mine), DEV), (event(2), DEV)]
    with pytest.raises(DocumentChanged):
        await RacingSink(db, race).write(sink(db).build(batch))
    written = {"userId": "alice", ENTRY_MARK: {"$exists": True}}
    assert sync_db[USAGE_LOG].count_documents(written) == 0
    out = await sink(db).write(sink(db).build(batch))  # the retry
    assert {i: r.reason for i, r in out.rejected.items()} == {0: reason}


async def test_another_consumer_of_the_same_entry_writing_first_is_not_refused(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    """Two consumers hold one reclaimed entry: the other writes the log between our check
    and our write. Ours matches nothing (already written by this entry); the retry finds
    it written by this entry: no dead letter, the stored category decides."""
    mine = upstream_log(sync_db, "alice")
    games = Decision("Entertainment", "app", "x")

    async def race(collection: str) -> None:
        other = sink(db)
        await other.write(other.build([(event(1, log=mine), games)]))

    with pytest.raises(DocumentChanged):
        await RacingSink(db, race).write(sink(db).build([(event(1, log=mine), DEV)]))
    out = await sink(db).write(sink(db).build([(event(1, log=mine), DEV)]))
    assert out.rejected == {} and out.stored == {0: "Entertainment"}


# --- categorizedDataId ------------------------------------------------------------------


def record(sync_db: Any, title: str = "a.py", **extra: Any) -> str:
    doc = {"app": "Code", "url": "", "title": title, "category": "Uncategorized", **extra}
    return str(sync_db[CATEGORIZED_DATA].insert_one(doc).inserted_id)


async def test_a_record_of_the_events_key_takes_only_the_classification(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    cat = record(sync_db, isLLMBased=False, owner="upstream")
    s = sink(db)
    await s.write(s.build([(event(1, cat=cat), DEV)]))
    doc = sync_db[CATEGORIZED_DATA].find_one({"_id": ObjectId(cat)})
    assert doc == {
        "_id": ObjectId(cat), "app": "Code", "url": "", "title": "a.py", "owner": "upstream",
        "category": "Development", "categoryId": 1, "isLLMBased": False,
    }  # fmt: skip
    log = sync_db[USAGE_LOG].find_one({})
    assert log["categorizedDataId"] == ObjectId(cat)


async def test_a_record_of_another_key_is_left_alone_and_the_derived_id_is_used(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    """The producer named the record of another (app, url, title): it is not rewritten;
    the event is written as if it carried no id (its own key's derived record)."""
    other = record(sync_db, title="victim.py", category="Finance")
    s = sink(db)
    out = await s.write(s.build([(event(1, title="mine.py", cat=other), DEV)]))
    assert out.rejected == {}
    assert sync_db[CATEGORIZED_DATA].find_one({"_id": ObjectId(other)}) == {
        "_id": ObjectId(other), "app": "Code", "url": "", "title": "victim.py",
        "category": "Finance",
    }  # fmt: skip
    derived = categorized_data_id("Code", "", "mine.py")
    assert sync_db[CATEGORIZED_DATA].find_one({"_id": derived})["title"] == "mine.py"
    assert sync_db[USAGE_LOG].find_one({})["categorizedDataId"] == derived
    assert s.ignored_categorized_ids == 1


async def test_an_llm_verdict_in_a_named_record_is_never_replaced_by_a_rule(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    cat = record(sync_db, category="Finance", categoryId=4, isLLMBased=True)
    s = sink(db)
    fallback = Decision("Uncategorized", "default")
    await s.write(s.build([(event(1, cat=cat), fallback)]))
    doc = sync_db[CATEGORIZED_DATA].find_one({"_id": ObjectId(cat)})
    assert (doc["category"], doc["isLLMBased"]) == ("Finance", True)
    llm = Decision("Development", "llm")
    await s.write(s.build([(event(2, cat=cat), llm)]))  # a verdict replaces a verdict
    doc = sync_db[CATEGORIZED_DATA].find_one({"_id": ObjectId(cat)})
    assert (doc["category"], doc["isLLMBased"]) == ("Development", True)


async def test_a_new_named_record_is_created_by_its_first_key_only(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    new = str(ObjectId())
    s = sink(db)
    batch = [(event(1, cat=new), DEV), (event(2, title="other.py", cat=new), DEV)]
    await s.write(s.build(batch))
    assert sync_db[CATEGORIZED_DATA].find_one({"_id": ObjectId(new)})["title"] == "a.py"
    refs = {d["_id"]: d["categorizedDataId"] for d in sync_db[USAGE_LOG].find({})}
    tag = stream_tag(STREAM)
    assert refs[usage_log_id(tag, event(1).entry_id)] == ObjectId(new)
    assert refs[usage_log_id(tag, event(2).entry_id)] == categorized_data_id("Code", "", "other.py")


@pytest.mark.parametrize("source", ["app", "default"])
async def test_a_named_record_changed_after_the_check_is_decided_by_the_retry(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any, source: Source
) -> None:
    """Someone renames the record between the check and the write (or, for a rule's
    decision, the LLM decides it): the guarded update matches nothing, the batch is
    retried; the retry sees the record as it is now."""
    cat = record(sync_db)
    change = {"title": "renamed.py"} if source == "app" else {"isLLMBased": True}

    async def race(collection: str) -> None:
        if collection == CATEGORIZED_DATA:
            await db[CATEGORIZED_DATA].update_one({"_id": ObjectId(cat)}, {"$set": change})

    decision = Decision("Development" if source == "app" else "Finance", source)
    with pytest.raises(DocumentChanged):
        await RacingSink(db, race).write(sink(db).build([(event(1, cat=cat), decision)]))
    assert sync_db[CATEGORIZED_DATA].find_one({"_id": ObjectId(cat)})["category"] == (
        "Uncategorized"
    )
    await sink(db).write(sink(db).build([(event(1, cat=cat), decision)]))
    doc = sync_db[CATEGORIZED_DATA].find_one({"_id": ObjectId(cat)})
    assert doc["category"] == "Uncategorized"  # renamed: not ours; LLM-decided: kept


async def test_a_record_squatting_a_derived_id_is_restored_for_its_key(
    db: AsyncDatabase[dict[str, Any]], sync_db: Any
) -> None:
    """Derived categorized_data ids are predictable too (a hash of the key): mallory names
    the derived id of alice's key as a new record of her own key. Alice's event, when it
    comes, finds the record holding another key and rewrites it whole for her key."""
    squat = categorized_data_id("Code", "", "victim.py")
    s = sink(db)
    llm = Decision("Finance", "llm")  # even a verdict: it was for another key
    await s.write(s.build([(event(1, user="mallory", title="evil", cat=str(squat)), llm)]))
    assert sync_db[CATEGORIZED_DATA].find_one({"_id": squat})["title"] == "evil"
    await s.write(s.build([(event(2, title="victim.py"), Decision("Uncategorized", "default"))]))
    doc = sync_db[CATEGORIZED_DATA].find_one({"_id": squat})
    assert (doc["title"], doc["category"], doc["isLLMBased"]) == (
        "victim.py",
        "Uncategorized",
        False,
    )
