"""`pomocore patterns reclassify` (#15 §7): the stored categorized_data records follow a
pattern change; verdicts of the LLM, and stored categories the new patterns say nothing
about, are kept; `--dry-run` writes nothing; `--after` resumes; `--workers` gives the
inline answers; a record changed during the run is left as it was. On the MongoDB-wire
server, as the other CLI tests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import COLLECTION, PatternSet, load_default_pattern_set
from pomocore.core.decision import Decision
from pomocore.core.ids import categorized_data_id
from pomocore.core.settings import Settings
from pomocore.reclassify import (
    CHANGED,
    KEPT_UNDECIDED,
    SKIPPED_LLM,
    UNCHANGED,
    Options,
    RecordReclassifier,
    outcome,
    relink,
    walk,
)
from pomocore.sinks.mongo import CATEGORIZED_DATA
from tests.ops.test_cli import JSON_KEYS, one_document
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import run_cli, server_env

# The pattern change: a new app pattern for Development.
NEW_APP = "acme-builder"
# (app, url, title, stored category, stored isLLMBased, category after reclassify)
RECORDS = [
    (NEW_APP, "", "build 1", "Uncategorized", False, "Development"),  # now decided
    ("Google Chrome", "https://github.com/o/r", "PR", "Browsing", False, "Development"),
    ("Slack", "", "general", "Communication", False, "Communication"),  # unchanged
    (NEW_APP, "", "build 2", "Game", True, "Game"),  # the LLM's verdict stays
    (NEW_APP, "", "build 3", "Music", 1, "Music"),  # (as the wire server stores true)
    ("unknown-tool", "", "w", "Design", False, "Design"),  # undecided now: stored kept
    ("unknown-tool", "", "w2", "Uncategorized", False, "Uncategorized"),  # same: unchanged
]
# The records are stored with a categoryId no category has (a load since gave categories
# new `_id`s): the five whose category stays are relinked.
STALE_ID = ObjectId(b"old-category")
EXPECTED_COUNTS = {
    "read": 7, "changed": 2, "unchanged": 2, "skipped_llm": 2, "kept_undecided": 1,
    "conflicts": 0, "relinked": 5,
}  # fmt: skip


def new_patterns() -> PatternSet:
    return load_default_pattern_set().with_pattern("Development", "app", NEW_APP, learned=False)


@pytest.fixture
def db(settings: Settings) -> Iterator[pymongo.database.Database[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_uri)
    yield client[settings.mongo_db]
    client.close()


def store_patterns(db: pymongo.database.Database[dict[str, Any]]) -> PatternSet:
    patterns = new_patterns()
    db[COLLECTION].insert_many(patterns.documents())
    return patterns


def record(app: str, url: str, title: str, category: str, llm: object) -> dict[str, Any]:
    return {
        "_id": categorized_data_id(app, url, title),
        "app": app,
        "url": url,
        "title": title,
        "categoryId": STALE_ID,
        "category": category,
        "isLLMBased": llm,
    }


def seed(db: pymongo.database.Database[dict[str, Any]]) -> None:
    db[CATEGORIZED_DATA].insert_many([record(*r[:5]) for r in RECORDS])


def by_id(db: pymongo.database.Database[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {d["_id"]: d for d in db[CATEGORIZED_DATA].find({})}


def reclassify(settings: Settings, *args: str, code: int = 0) -> dict[str, Any]:
    result = run_cli("patterns", "reclassify", "--json", *args, env=server_env(settings))
    return one_document(result, code)


@pytest.mark.parametrize(
    ("stored", "decision", "expected"),
    [
        ({"category": "Browsing"}, Decision("Development", "domain", "github.com"), CHANGED),
        ({"category": "Development"}, Decision("Development", "app", "Code"), UNCHANGED),
        ({"category": "Game", "isLLMBased": True}, Decision("Development", "app", "x"),
         SKIPPED_LLM),
        ({"category": "Game", "isLLMBased": 1}, Decision("Development", "app", "x"), SKIPPED_LLM),
        ({"category": "Game", "isLLMBased": False}, Decision("Development", "app", "x"), CHANGED),
        ({"category": "Game", "isLLMBased": 0}, Decision("Development", "app", "x"), CHANGED),
        ({"category": "Design"}, Decision("Uncategorized", "default"), KEPT_UNDECIDED),
        ({"category": "Uncategorized"}, Decision("Uncategorized", "default"), UNCHANGED),
        ({}, Decision("Browsing", "default"), KEPT_UNDECIDED),  # no category: nothing decided
        ({}, Decision("Music", "app", "Spotify"), CHANGED),
    ],
)  # fmt: skip
def test_outcome_table(stored: dict[str, Any], decision: Decision, expected: str) -> None:
    assert outcome(stored, decision) == expected


@pytest.mark.parametrize(
    ("stored", "relinked_to"),
    [
        ({"category": "Game", "categoryId": STALE_ID}, "Game"),
        ({"category": "Game"}, "Game"),  # no categoryId at all
        ({"category": "Game", "isLLMBased": True, "categoryId": STALE_ID}, "Game"),
        ({"category": "Game", "categoryId": "current"}, None),  # already right
        ({"category": "Spreadsheets", "categoryId": STALE_ID}, None),  # no such document
        ({"categoryId": STALE_ID}, None),  # no category
        ({"category": 7, "categoryId": STALE_ID}, None),  # not a category name
    ],
)
def test_relink_table(stored: dict[str, Any], relinked_to: str | None) -> None:
    ids = {"Game": "current"}
    update = relink({"_id": 1, **stored}, ids)
    if relinked_to is None:
        assert update is None
    else:  # guarded by what was read; sets the categoryId only
        assert update is not None
        guard = {"$in": [stored.get("categoryId")]}
        assert update._filter == {"_id": 1, "category": stored["category"], "categoryId": guard}
        assert update._doc == {"$set": {"categoryId": ids[relinked_to]}}


def test_changed_records_follow_the_patterns_and_the_others_are_kept(
    settings: Settings, db: pymongo.database.Database[dict[str, Any]]
) -> None:
    patterns = store_patterns(db)
    seed(db)
    before = by_id(db)
    summary = reclassify(settings)
    assert set(summary) == JSON_KEYS["patterns reclassify"]
    assert {k: summary[k] for k in EXPECTED_COUNTS} == EXPECTED_COUNTS
    assert summary["dry_run"] is False and summary["patterns_version"] == patterns.version
    assert summary["transitions"] == [
        {"from": "Browsing", "to": "Development", "records": 1},
        {"from": "Uncategorized", "to": "Development", "records": 1},
    ]
    after = by_id(db)
    for app, url, title, stored, _, expected in RECORDS:
        doc_id = categorized_data_id(app, url, title)
        assert after[doc_id]["category"] == expected, (app, title)
        if expected == stored:  # relinked: the categoryId of its category, nothing else
            assert after[doc_id] == before[doc_id] | {"categoryId": patterns.category_ids[stored]}
        else:  # the fields the sink writes for a pattern's decision (CONTRACT §3)
            assert after[doc_id]["categoryId"] == patterns.category_ids[expected]
            assert not after[doc_id]["isLLMBased"]
            assert {k: v for k, v in after[doc_id].items() if k not in ("category",
                    "categoryId")} == {k: v for k, v in before[doc_id].items() if k not in
                    ("category", "categoryId")}  # fmt: skip
    again = reclassify(settings)  # idempotent: nothing left to change
    assert again["changed"] == 0 and again["unchanged"] == 4 and again["transitions"] == []
    assert again["relinked"] == 0


def test_dry_run_writes_nothing(
    settings: Settings, db: pymongo.database.Database[dict[str, Any]]
) -> None:
    seed(db)  # and no stored patterns: the consumers' loader would seed them
    before = by_id(db)
    summary = reclassify(settings, "--dry-run")
    assert summary["dry_run"] is True
    # The shipped set, without the new pattern: only the github.com tab changes.
    assert summary["changed"] == 1 and summary["transitions"] == [
        {"from": "Browsing", "to": "Development", "records": 1}
    ]
    assert summary["relinked"] == 6  # every record whose category stays
    assert by_id(db) == before
    assert db.list_collection_names() == [CATEGORIZED_DATA]  # no patterns seeded either
    store_patterns(db)
    dry = reclassify(settings, "--dry-run")
    assert {k: dry[k] for k in EXPECTED_COUNTS} == EXPECTED_COUNTS
    assert by_id(db) == before
    text = run_cli("patterns", "reclassify", "--dry-run", env=server_env(settings))
    out = text.stdout.decode()
    assert text.returncode == 0 and "7 records read, 2 would change" in out
    assert "nothing written (--dry-run)" in out and "Uncategorized -> Development: 1" in out
    assert by_id(db) == before


def many_records(n: int) -> list[dict[str, Any]]:
    """Records of keys the new patterns decide (every third), leave undecided or decide as
    they were stored."""
    docs = []
    for i in range(n):
        if i % 3 == 0:
            docs.append(record(NEW_APP, "", f"build {i}", "Uncategorized", False))
        elif i % 3 == 1:
            docs.append(record(f"unknown-{i}", "", f"w {i}", "Design", False))
        else:
            docs.append(record("Google Chrome", f"https://github.com/o/{i}", "PR", "Game", False))
    return docs


def test_after_resumes_where_a_run_stopped(
    settings: Settings, db: pymongo.database.Database[dict[str, Any]]
) -> None:
    store_patterns(db)
    db[CATEGORIZED_DATA].insert_many(many_records(60))
    ids = sorted(by_id(db))
    middle = ids[24]
    first = reclassify(settings, "--after", str(middle), "--page-size", "7")
    assert (
        first["read"] == 35 and first["after"] == str(middle) and first["last_id"] == str(ids[-1])
    )
    after = by_id(db)
    assert all(after[i]["category"] != "Development" for i in ids[:25])  # before: untouched
    changed_after = sum(after[i]["category"] == "Development" for i in ids[25:])
    assert first["changed"] == changed_after > 0
    rest = reclassify(settings, "--page-size", "7")
    assert rest["read"] == 60 and rest["changed"] == 40 - changed_after
    assert sum(d["category"] == "Development" for d in by_id(db).values()) == 40


def test_workers_give_the_inline_answers(settings: Settings, mongo_uri: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri)
    inline_db, pooled_db = client[settings.mongo_db], client[settings.mongo_db + "_pool"]
    for db in (inline_db, pooled_db):
        store_patterns(db)
        db[CATEGORIZED_DATA].insert_many(many_records(3_000))
    inline = reclassify(settings, "--page-size", "1000")
    pooled_settings = Settings.from_dsn(
        settings.redis_url, mongo_uri, mongo_db=settings.mongo_db + "_pool"
    )
    pooled = reclassify(pooled_settings, "--workers", "2", "--pool-threshold", "1000")
    assert pooled["pooled_keys"] == 3_000 and inline["pooled_keys"] == 0
    assert pooled["page_size"] == 1000  # the threshold, with --workers
    same = ("read", "changed", "unchanged", "skipped_llm", "kept_undecided", "transitions")
    assert {k: pooled[k] for k in same} == {k: inline[k] for k in same}
    assert inline["changed"] == 2_000
    assert by_id(pooled_db) == by_id(inline_db)
    client.drop_database(settings.mongo_db + "_pool")
    client.close()


async def test_a_record_changed_during_the_run_is_left_as_it_was(settings: Settings) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_uri)
    coll = client[settings.mongo_db][CATEGORIZED_DATA]
    await coll.insert_many([record(*r[:5]) for r in RECORDS])
    work = RecordReclassifier(
        CachingClassifier(Classifier.from_patterns(new_patterns()), 0), 0, 1, dry_run=False
    )
    page = await coll.find({}).sort("_id", 1).to_list(None)
    plan = work.plan(page)  # planned from what was read ...
    assert len(plan.updates) == 2
    # ... then the LLM's reclassifier decides one record and a consumer rewrites the other
    llm_id = categorized_data_id(NEW_APP, "", "build 1")
    tab_id = categorized_data_id("Google Chrome", "https://github.com/o/r", "PR")
    await coll.update_one({"_id": llm_id}, {"$set": {"category": "Music", "isLLMBased": True}})
    await coll.update_one({"_id": tab_id}, {"$set": {"category": "Education"}})
    await work.apply(coll, plan)
    assert work.summary.changed == 0 and work.summary.conflicts == 2
    assert (await coll.find_one({"_id": llm_id}) or {})["category"] == "Music"
    assert (await coll.find_one({"_id": tab_id}) or {})["category"] == "Education"
    await client.close()


class StopAfterOnePage(RecordReclassifier):
    """Cuts MongoDB off (a reset proxy) once its first page is written."""

    def __init__(self, proxy: FaultProxy, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proxy = proxy

    async def apply(self, coll: Any, plan: Any) -> None:
        await super().apply(coll, plan)
        self.proxy.set_mode("reset")


async def test_a_run_cut_off_says_where_to_resume(settings: Settings, mongo_server: Any) -> None:
    seeder: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_uri)
    coll = seeder[settings.mongo_db][CATEGORIZED_DATA]
    await coll.insert_many(many_records(30))
    proxy = FaultProxy(mongo_server.port)
    proxy.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://{proxy.host_port}", serverSelectionTimeoutMS=1000, socketTimeoutMS=2000
    )
    classifier = CachingClassifier(Classifier.from_patterns(new_patterns()), 0)
    work = StopAfterOnePage(proxy, classifier, 0, 1, dry_run=False)
    err = io.StringIO()
    with pytest.raises(pymongo.errors.PyMongoError):
        await walk(client[settings.mongo_db][CATEGORIZED_DATA], work, Options(page_size=10), err)
    last = work.summary.last_id
    assert work.summary.read == 10
    assert f"reclassify: stopped after 10 records; resume with --after {last}" in err.getvalue()
    assert last == sorted([d["_id"] async for d in coll.find({})])[9]
    await client.close()
    proxy.close()
    # resumed: the other 20 records are read, and all of them reclassified
    rest = RecordReclassifier(classifier, 0, 1, dry_run=False)
    summary = await walk(coll, rest, Options(after=last, page_size=10), io.StringIO())
    assert summary.read == 20
    assert await coll.count_documents({"category": "Development"}) == 20
    await seeder.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("reclassify", "--workers", "2", "--page-size", "100"),
         "error: --page-size 100 is below --pool-threshold 50000: the pool would never run"),
        (("reclassify", "--after", "nope"), "--after: not an ObjectId (24 hex digits): 'nope'"),
        (("reclassify", "patterns.json"), "error: patterns reclassify takes no FILE"),
        (("export", "--after", "0" * 24), "error: --after, --page-size and --workers go with "
         "patterns reclassify"),
        (("check", "--workers", "2"), "go with patterns reclassify"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_cli("patterns", *args, env={})
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_invalid_stored_patterns_exit_1(
    settings: Settings, db: pymongo.database.Database[dict[str, Any]]
) -> None:
    db[COLLECTION].insert_one({"category": "Not A Category"})
    result = run_cli("patterns", "reclassify", env=server_env(settings))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "error: unknown category 'Not A Category'"


def test_help_says_past_scores_stay() -> None:
    text = run_cli("patterns", "--help", env={}).stdout.decode()
    assert "Usage logs and leaderboards" in text and "not rewritten" in text
    assert "`leaderboard rebuild --from-mongo` recomputes leaderboards from the usage" in text
