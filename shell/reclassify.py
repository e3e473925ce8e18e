"""`pomocore patterns reclassify`: bring the stored `categorized_data` records to the
current patterns, after `pomocore patterns load` (#15 §7).

It reads the stored patterns with the consumers' loader, walks `categorized_data` in
`_id` order, one cursor read in pages of `--page-size` records (the collection is never
held in memory; `--after ID` starts after a record, to resume), classifies each page's
distinct (app, url, title) through `CachingClassifier.classify_many` (with `--workers N`,
a page of at least `--pool-threshold` distinct keys goes to the process pool, as
`pomocore classify --workers` sends a file), and updates the records whose category
changed: unordered bulk writes of at most WRITE_CHUNK updates, each update guarded by
what was read.

The rules of the sink (sinks/mongo.py, docs/contract.md):
- a verdict of the LLM (`isLLMBased` true) is never replaced by a pattern's decision;
- a key the current patterns leave undecided keeps its stored category: the no-LLM
  default (Browsing or Uncategorized) decides nothing, and the stored category may be an
  older pattern's or the LLM's;
- a change sets `category`, its `categoryId` and `isLLMBased: false`, the fields the sink
  writes for a pattern's decision (`classification_fields`);
- a record whose category stays but whose `categoryId` is not that category's document in
  the stored patterns (a load that gave categories new `_id`s) gets only its `categoryId`
  set: relinked.

It changes no usage log and no leaderboard: past time stays counted, exactly once, under
the category it was counted with (docs/classification.md, "Reclassifying stored records").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TextIO

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from pomocore import exits
from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import PatternSet, load_default_pattern_set
from pomocore.classifiers.pool import CLI_POOL_THRESHOLD
from pomocore.classifiers.store import load_or_seed_patterns, read_stored_patterns
from pomocore.cli_format import bounded_int, write_json
from pomocore.core.connect import async_mongo
from pomocore.core.decision import ClassKey, Decision
from pomocore.core.errors import ClassifierError
from pomocore.core.settings import Settings
from pomocore.progress import Progress
from pomocore.sinks.mongo import CATEGORIZED_DATA, classification_fields

# Records per page: one cursor batch, one classify_many call, one bulk write. 10,000
# records of three short strings are a few MB of Python objects.
PAGE_SIZE = 10_000
PAGE_SIZE_MAX = 200_000
# Updates per bulk write: each is one round trip bounded by the socket timeout, however
# large the page (50,000 guarded updates took over 30 s on the MongoDB-wire server).
WRITE_CHUNK = 1_000
# Below every ObjectId: the walk's start without --after. A range on `_id` keeps the walk
# to ObjectIds, the only `_id`s pomocore writes (core/ids.py, or a producer's ObjectId).
BEFORE_ALL = ObjectId(b"\x00" * 12)
# What is read of a record, and what an update's filter then requires to be unchanged.
READ_FIELDS = {"app": 1, "url": 1, "title": 1, "category": 1, "categoryId": 1, "isLLMBased": 1}
# The MongoDB-wire server of the tests stores a boolean that an update set as 1.
LLM_BASED = (True, 1)

# What happens to a record (each record read gets exactly one).
CHANGED = "changed"
UNCHANGED = "unchanged"
SKIPPED_LLM = "skipped_llm"
KEPT_UNDECIDED = "kept_undecided"

NOT_REWRITTEN = (
    "usage logs and leaderboards are not rewritten: past time stays counted under the "
    "category it was counted with"
)


def outcome(stored: Mapping[str, Any], decision: Decision) -> str:
    """What reclassifying a record does, given the record as read and the current
    patterns' decision for its key."""
    if stored.get("isLLMBased") in LLM_BASED:
        return SKIPPED_LLM  # never replace a verdict of the LLM with a pattern's decision
    if stored.get("category") == decision.category:
        return UNCHANGED
    if not decision.decided:
        return KEPT_UNDECIDED  # the no-LLM default decides nothing: keep what is stored
    return CHANGED


def record_key(stored: Mapping[str, Any]) -> ClassKey:
    """The (app, url, title) to classify, read as `pomocore classify` reads an event."""
    return (_text(stored, "app"), _text(stored, "url"), _text(stored, "title"))


def _text(stored: Mapping[str, Any], name: str) -> str:
    value = stored.get(name)
    return "" if value is None else value if isinstance(value, str) else str(value)


def guarded_update(
    stored: Mapping[str, Any], decision: Decision, category_ids: Mapping[str, Any]
) -> UpdateOne:
    """The update of a record to `decision`, applied only if the record still holds what
    was read: the same key and category, and no verdict of the LLM. A consumer or the
    LLM's reclassifier that changed it in between wins; the update matches nothing.
    (Filtered on `_id` first: the MongoDB-wire server answers that from its primary key.
    A missing field is read as None, which matches a missing field.)"""
    guard = {
        "_id": stored["_id"],
        "app": stored.get("app"),
        "url": stored.get("url"),
        "title": stored.get("title"),
        "category": stored.get("category"),
        # `$nin` matches a missing field on MongoDB and the MongoDB-wire server alike
        "isLLMBased": {"$nin": list(LLM_BASED)},
    }
    return UpdateOne(guard, {"$set": classification_fields(category_ids, decision)})


def relink(stored: Mapping[str, Any], category_ids: Mapping[str, Any]) -> UpdateOne | None:
    """The update that points a record's `categoryId` at its category's document in the
    current patterns, when it points elsewhere; None when it is right, or the category has
    no document. Guarded by the category and `categoryId` read: a record changed in
    between is left as it is (its writer set the current one). (`$in` of one: the
    MongoDB-wire server matches an ObjectId field other than `_id` no other way; on
    MongoDB it is equality, and `[None]` matches a missing field on both.)"""
    category = stored.get("category")
    current = category_ids.get(category) if isinstance(category, str) else None
    if current is None or stored.get("categoryId") == current:
        return None
    guard = {
        "_id": stored["_id"],
        "category": category,
        "categoryId": {"$in": [stored.get("categoryId")]},
    }
    return UpdateOne(guard, {"$set": {"categoryId": current}})


@dataclass(slots=True)
class PagePlan:
    """The updates of one page, and what happens to each of its records."""

    updates: list[UpdateOne] = field(default_factory=list)
    relinks: list[UpdateOne] = field(default_factory=list)  # of records whose category stays
    outcomes: Counter[str] = field(default_factory=Counter)
    # (stored category, new category) -> records, for the updates
    transitions: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    distinct_keys: int = 0
    last_id: Any = None


@dataclass(slots=True)
class Summary:
    read: int = 0
    changed: int = 0  # updates applied (with --dry-run: that would be sent)
    conflicts: int = 0  # updates that matched nothing: the record changed in between
    relinked: int = 0  # categoryIds set, of records whose category stays (or would be)
    outcomes: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    pooled_keys: int = 0
    last_id: Any = None
    elapsed_s: float = 0.0

    def add(self, plan: PagePlan, matched: int, relinked: int) -> None:
        self.read += sum(plan.outcomes.values())
        self.outcomes.update(plan.outcomes)
        self.transitions.update(plan.transitions)
        self.changed += matched
        self.relinked += relinked
        self.conflicts += len(plan.updates) - matched
        self.last_id = plan.last_id


def _category_text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


class RecordReclassifier:
    """Plans and applies the updates of pages of records, and sums them up."""

    def __init__(
        self, classifier: CachingClassifier, workers: int, pool_threshold: int, dry_run: bool
    ) -> None:
        self.classifier = classifier
        self.workers = workers
        self.pool_threshold = pool_threshold
        self.dry_run = dry_run
        self.summary = Summary()

    def plan(self, page: list[dict[str, Any]]) -> PagePlan:
        keys = [record_key(doc) for doc in page]
        distinct = list(dict.fromkeys(keys))  # producer-named records may share a key
        found = self.classifier.classify_many(distinct)
        decisions = dict(zip(distinct, found, strict=True))
        plan = PagePlan(distinct_keys=len(distinct), last_id=page[-1]["_id"])
        category_ids = self.classifier.category_ids
        for doc, key in zip(page, keys, strict=True):
            decision = decisions[key]
            what = outcome(doc, decision)
            plan.outcomes[what] += 1
            if what == CHANGED:
                plan.updates.append(guarded_update(doc, decision, category_ids))
                plan.transitions[(_category_text(doc.get("category")), decision.category)] += 1
            elif (update := relink(doc, category_ids)) is not None:
                plan.relinks.append(update)
        return plan

    async def apply(self, coll: AsyncCollection[dict[str, Any]], plan: PagePlan) -> None:
        """Write the page's updates (unless --dry-run) and count them."""
        matched, relinked = len(plan.updates), len(plan.relinks)
        if not self.dry_run:
            matched = await _write(coll, plan.updates)
            relinked = await _write(coll, plan.relinks)
        if self.workers and plan.distinct_keys >= self.pool_threshold:
            self.summary.pooled_keys += plan.distinct_keys  # (the cache holds nothing)
        self.summary.add(plan, matched, relinked)

    async def run(
        self,
        coll: AsyncCollection[dict[str, Any]],
        after: ObjectId | None,
        page_size: int,
        progress: Progress,
    ) -> Summary:
        self.summary.last_id = after
        started = time.monotonic()
        # One cursor in `_id` order, read a page at a time: on MongoDB an index walk; the
        # MongoDB-wire server of the tests scans for a range on `_id`, once per query, so
        # one query per page would cost a scan per page.
        cursor = coll.find(
            {"_id": {"$gt": after or BEFORE_ALL}},
            READ_FIELDS,
            sort=[("_id", 1)],
            batch_size=page_size,
        )
        try:
            async with aclosing(_pages(cursor, page_size)) as pages:
                async for page in pages:
                    await self.apply(coll, self.plan(page))
                    progress.advance(len(page), f"{self.summary.changed:,} changed")
        finally:
            await cursor.close()
            self.summary.elapsed_s = time.monotonic() - started
        return self.summary


async def _write(coll: AsyncCollection[dict[str, Any]], updates: list[UpdateOne]) -> int:
    """Unordered bulk writes of at most WRITE_CHUNK updates; the records they matched."""
    matched = 0
    for start in range(0, len(updates), WRITE_CHUNK):
        chunk = updates[start : start + WRITE_CHUNK]
        matched += (await coll.bulk_write(chunk, ordered=False)).matched_count
    return matched


async def _pages(cursor: Any, size: int) -> AsyncGenerator[list[dict[str, Any]], None]:
    page: list[dict[str, Any]] = []
    async for doc in cursor:
        page.append(doc)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page


@dataclass(frozen=True, slots=True)
class Options:
    after: ObjectId | None = None
    page_size: int = PAGE_SIZE
    workers: int = 0
    pool_threshold: int = CLI_POOL_THRESHOLD
    dry_run: bool = False


def reclassify_command(
    settings: Settings,
    out: TextIO,
    *,
    after: ObjectId | None = None,
    page_size: int | None = None,
    workers: int = 0,
    pool_threshold: int = CLI_POOL_THRESHOLD,
    dry_run: bool = False,
    as_json: bool = False,
    err: TextIO | None = None,
) -> int:
    """Reclassify the stored records; the summary goes to `out`, progress to `err`.

    Returns 0, 1 when the stored patterns are invalid or MongoDB refused a write, 2 for
    a page size the pool could never fill. MongoDB unreachable raises (exit 3 at the
    CLI's edge); a run stopped after some pages says where to resume (`--after`).
    """
    err = err or sys.stderr
    size = page_size or (pool_threshold if workers else PAGE_SIZE)
    if workers and size < pool_threshold:
        print(
            f"error: --page-size {size} is below --pool-threshold {pool_threshold}: the pool "
            "would never run (raise --page-size or lower --pool-threshold)",
            file=err,
        )
        return 2
    if size > PAGE_SIZE_MAX:
        print(f"error: --pool-threshold {size} is above the largest page, {PAGE_SIZE_MAX}",
              file=err)  # fmt: skip
        return 2
    options = Options(after, size, workers, pool_threshold, dry_run)
    try:
        summary, version = asyncio.run(_reclassify(settings, options, err))
    except (ClassifierError, PyMongoError) as exc:
        if exits.translate(exc, settings.redis_url, settings.mongo_uri) is not None:
            raise  # MongoDB unavailable: one line, exit 3, at the CLI's edge
        print(f"error: {exc}", file=err)
        return 1
    report = summary_document(summary, version, options)
    if as_json:
        write_json(report, out)
    else:
        _print_summary(report, out)
    return 0


async def _reclassify(settings: Settings, options: Options, err: TextIO) -> tuple[Summary, str]:
    client = async_mongo(settings)  # a stalled server fails the command
    try:
        db = client[settings.mongo_db]
        pattern_set = await _patterns(db, options.dry_run)
        classifier = CachingClassifier(
            Classifier.from_patterns(pattern_set),
            0,  # records are distinct keys: a cache would only cost
            pool_workers=options.workers,
            pool_threshold=options.pool_threshold,
        )
        work = RecordReclassifier(
            classifier, options.workers, options.pool_threshold, options.dry_run
        )
        try:
            return await walk(db[CATEGORIZED_DATA], work, options, err), pattern_set.version
        finally:
            classifier.close()
    finally:
        await client.close()


async def _patterns(db: AsyncDatabase[dict[str, Any]], dry_run: bool) -> PatternSet:
    """The set the consumers classify with. Their loader seeds an empty collection (and
    gives a category without a document one, for its categoryId); --dry-run writes
    nothing, so it reads the same set without storing it."""
    if not dry_run:
        return await load_or_seed_patterns(db)
    return await read_stored_patterns(db) or load_default_pattern_set()


async def walk(
    coll: AsyncCollection[dict[str, Any]], work: RecordReclassifier, options: Options, err: TextIO
) -> Summary:
    """`work.run` with a progress bar on `err`; a run that stops says where to resume."""
    # The bar's total: the collection's count from its metadata (no scan); none with --after.
    total = 0 if options.after else await coll.estimated_document_count()
    with Progress("reclassify", total, unit="records", stream=err) as progress:
        try:
            return await work.run(coll, options.after, options.page_size, progress)
        except BaseException:  # an outage, Ctrl-C: the pages done stay done
            if work.summary.read:
                progress.close(final=False)
                print(
                    f"reclassify: stopped after {work.summary.read:,} records; resume with "
                    f"--after {work.summary.last_id}",
                    file=err,
                )
            raise


def summary_document(summary: Summary, version: str, options: Options) -> dict[str, Any]:
    """The report (`--json`; docs/cli.md lists its keys)."""
    rows = sorted(
        summary.transitions.items(), key=lambda item: (-item[1], str(item[0][0]), item[0][1])
    )
    return {
        "dry_run": options.dry_run,
        "patterns_version": version,
        "after": None if options.after is None else str(options.after),
        "last_id": None if summary.last_id is None else str(summary.last_id),
        "read": summary.read,
        "changed": summary.changed,
        "unchanged": summary.outcomes[UNCHANGED],
        "skipped_llm": summary.outcomes[SKIPPED_LLM],
        "kept_undecided": summary.outcomes[KEPT_UNDECIDED],
        "conflicts": summary.conflicts,
        "relinked": summary.relinked,
        "transitions": [{"from": f, "to": t, "records": n} for (f, t), n in rows],
        "page_size": options.page_size,
        "workers": options.workers,
        "pooled_keys": summary.pooled_keys,
        "elapsed_s": round(summary.elapsed_s, 3),
        "records_per_s": round(summary.read / summary.elapsed_s) if summary.elapsed_s else 0,
    }


def _print_summary(doc: dict[str, Any], out: TextIO) -> None:
    verb = "would change" if doc["dry_run"] else "changed"
    conflicts = (
        f", {doc['conflicts']:,} changed by others meanwhile (left as they were)"
        if doc["conflicts"]
        else ""
    )
    would = "would be " if doc["dry_run"] else ""
    relinked = f", {doc['relinked']:,} categoryIds {would}relinked" if doc["relinked"] else ""
    print(
        f"patterns {doc['patterns_version']}: {doc['read']:,} records read, {doc['changed']:,} "
        f"{verb}, {doc['unchanged']:,} unchanged, {doc['skipped_llm']:,} LLM-based kept, "
        f"{doc['kept_undecided']:,} undecided kept{conflicts}{relinked} "
        f"({doc['records_per_s']:,} records/s)",
        file=out,
    )
    for row in doc["transitions"]:
        print(f"  {row['from'] or '(none)'} -> {row['to']}: {row['records']:,}", file=out)
    if doc["last_id"] is not None:
        print(f"last record: {doc['last_id']} (a later run may start after it: --after)",
              file=out)  # fmt: skip
    if doc["dry_run"]:
        print("nothing written (--dry-run)", file=out)
    print(NOT_REWRITTEN, file=out)


def object_id(text: str) -> ObjectId:
    """An argparse type: a record's `_id`, 24 hex digits."""
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        raise argparse.ArgumentTypeError(f"not an ObjectId (24 hex digits): {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `patterns reclassify` (on the `patterns` parser, shell/cli.py)."""
    p.add_argument(
        "--after",
        type=object_id,
        metavar="ID",
        help="with reclassify: start after this record _id, to resume (default: the first)",
    )
    p.add_argument(
        "--page-size",
        type=bounded_int(1, PAGE_SIZE_MAX),
        metavar="N",
        help=f"with reclassify: records read, classified and written at a time (default: "
        f"{PAGE_SIZE}, or --pool-threshold with --workers)",
    )
