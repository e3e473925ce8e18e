"""Queue + background reclassifier, learning with live reload, and the review CLI."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import redis.asyncio as aioredis
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.llm.learning import Learner, subject_of
from pomocore.classifiers.llm.reclassifier import MAX_MISSING_DOC_TRIES, Reclassifier
from pomocore.classifiers.patterns import PatternSet, default_category_id
from pomocore.classifiers.store import load_or_seed_patterns, save_patterns
from pomocore.core.decision import ClassKey
from pomocore.core.ids import categorized_data_id
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.learned_cli import learned_command
from tests.support.fake_llm import FakeLLM
from tests.support.resolver import MakeResolver


async def _write_default_docs(db: AsyncDatabase[Any], keys: list[ClassKey]) -> None:
    """What the core's Mongo sink writes for keys that got the no-LLM rule."""
    await db["categorized_data"].insert_many(
        [
            {"_id": categorized_data_id(*k), "app": k[0], "url": k[1], "title": k[2],
             "category": "Uncategorized", "categoryId": default_category_id("Uncategorized"),
             "isLLMBased": False}
            for k in keys
        ]
    )


async def test_reclassifier_corrects_queued_keys_when_the_llm_is_back(
    fake_llm: FakeLLM, make_resolver: MakeResolver, adb: AsyncDatabase[Any]
) -> None:
    fake_llm.rule = lambda item: "Development"
    fake_llm.default = FakeLLM.error(503)
    resolver = make_resolver(failure_threshold=1, open_circuit_s=0.3)
    keys: list[ClassKey] = [("Code", "", f"file{i}.py") for i in range(3)]
    assert await resolver.resolve(keys) == {}
    await _write_default_docs(adb, keys)
    assert await resolver.queue.size() == 3

    ids = {c: default_category_id(c) for c in ("Development", "Uncategorized")}
    reclassifier = Reclassifier(resolver, adb, ids, idle_s=0.05)
    assert await reclassifier.run_once() == 0  # circuit open: nothing taken
    assert await resolver.queue.size() == 3

    fake_llm.default = FakeLLM.ok()
    await asyncio.sleep(0.35)
    stop = asyncio.Event()
    task = asyncio.create_task(reclassifier.run(stop))
    for _ in range(100):
        if await resolver.queue.size() == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2.0)  # stops promptly
    docs = await adb["categorized_data"].find({}).to_list(None)
    assert {(d["category"], d["categoryId"], d["isLLMBased"]) for d in docs} == {
        ("Development", ids["Development"], True)
    }
    assert resolver.stats.reclassified == 3
    assert fake_llm.calls == 2  # the failed one, then one request for all three


async def test_reclassifier_waits_for_the_core_to_write_the_document(
    fake_llm: FakeLLM, make_resolver: MakeResolver, adb: AsyncDatabase[Any]
) -> None:
    resolver = make_resolver()
    key: ClassKey = ("Zed", "", "notes")
    await resolver.queue.add([key])
    reclassifier = Reclassifier(resolver, adb, lambda c: c, retry_s=0.0)
    assert await reclassifier.run_once() == 1
    assert await resolver.queue.size() == 1  # no document yet: kept for later
    await _write_default_docs(adb, [key])
    assert await reclassifier.run_once() == 1
    assert await resolver.queue.size() == 0
    doc = await adb["categorized_data"].find_one({"_id": categorized_data_id(*key)})
    assert doc is not None and doc["isLLMBased"]  # nx-27017 may return 1 for true
    assert fake_llm.calls == 1  # the second round answered from memory


async def test_reclassifier_gives_up_on_a_document_that_never_appears(
    fake_llm: FakeLLM, make_resolver: MakeResolver, adb: AsyncDatabase[Any]
) -> None:
    resolver = make_resolver()
    await resolver.queue.add([("Ghost", "", "x")])
    reclassifier = Reclassifier(resolver, adb, lambda c: c, retry_s=0.0)
    for _ in range(MAX_MISSING_DOC_TRIES):
        await reclassifier.run_once()
    assert await resolver.queue.size() == 0


async def test_a_leased_key_returns_to_the_queue_if_its_worker_dies(
    make_resolver: MakeResolver,
) -> None:
    resolver = make_resolver()
    await resolver.queue.add([("a", "", "1")])
    assert await resolver.queue.claim(10, lease_s=0.2) == [("a", "", "1")]
    assert await resolver.queue.claim(10, lease_s=0.2) == []  # leased
    await asyncio.sleep(0.25)
    assert await resolver.queue.claim(10, lease_s=0.2) == [("a", "", "1")]


def test_subjects_are_hosts_for_browsers_and_apps_otherwise() -> None:
    def never(app: str) -> bool:
        return False

    assert subject_of(("Google Chrome", "https://www.Docs.Weird.dev:443/a?b", "t"), never) == (
        "domain", "docs.weird.dev",
    )
    assert subject_of(("Obscure IDE", "", "main.py"), never) == ("app", "Obscure IDE")
    assert subject_of(("Google Chrome", "", "New Tab"), Learner.__init__.__defaults__[0]) is None  # type: ignore[index]
    assert subject_of(("Firefox", "http://localhost:3000/", "dev"), never) is None
    assert subject_of(("Firefox", "chrome://newtab", ""), never) is None
    assert subject_of(("Firefox", "http://10.0.0.1/x", ""), never) is None


async def _seed_patterns(db: AsyncDatabase[Any]) -> None:
    await save_patterns(db, PatternSet.from_documents([]))


async def _workload(
    resolver: Any, classifier: Classifier, keys: list[ClassKey]
) -> dict[ClassKey, str]:
    """What the consumer does per batch: patterns first, the LLM for the undecided."""
    out: dict[ClassKey, str] = {}
    for i in range(0, len(keys), 2):  # batches of two events
        batch = keys[i : i + 2]
        decisions = {k: classifier.classify(*k) for k in batch}
        undecided = [k for k, d in decisions.items() if not d.decided]
        # One user per batch, a different one each batch: learning needs verdicts from
        # distinct users, and requests never mix users (one request per batch here).
        users = {k: [f"user-{i // 2}"] for k in undecided}
        answered = await resolver.resolve(undecided, users) if undecided else {}
        for k, d in decisions.items():
            out[k] = answered[k].category if k in answered else d.category
    return out


def _rule(item: dict[str, str]) -> str:
    if "weird.dev" in item["url"]:
        return "Documentation"
    if item["app"] == "Obscure IDE":
        return "Development"
    return "Entertainment" if "cat" in item["title"] else "Education"


async def test_learned_patterns_reduce_calls_on_a_repeated_workload(
    fake_llm: FakeLLM, make_resolver: MakeResolver, adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    fake_llm.rule = _rule
    await _seed_patterns(adb)
    resolver = make_resolver(learn_after=3, window_s=0.0)

    def workload(round_: int) -> list[ClassKey]:
        # Fresh titles every round: memory cannot answer, only patterns can.
        return (
            [("Obscure IDE", "", f"r{round_} file{i}.py") for i in range(4)]
            + [("Firefox", f"https://docs.weird.dev/p{i}", f"r{round_} page {i}") for i in range(4)]
            # A host with mixed verdicts must not be learned.
            + [
                ("Firefox", f"https://vids.example/{i}", f"r{round_} {'cat' if i % 2 else 'talk'}")
                for i in range(4)
            ]
        )

    classifier = Classifier.from_patterns(await load_or_seed_patterns(adb))
    first = await _workload(resolver, classifier, workload(1))
    calls_first = fake_llm.calls
    assert calls_first == 6
    assert first[("Obscure IDE", "", "r1 file0.py")] == "Development"
    assert resolver.stats.learned_patterns == 2
    assert await aredis.get(KeySpace().patterns_version_key) == b"2"  # each one announced

    classifier = Classifier.from_patterns(await load_or_seed_patterns(adb))  # what reload does
    second = await _workload(resolver, classifier, workload(2))
    assert fake_llm.calls - calls_first == 2  # only the mixed host still needs the LLM
    assert second[("Obscure IDE", "", "r2 file3.py")] == "Development"
    assert second[("Firefox", "https://docs.weird.dev/p2", "r2 page 2")] == "Documentation"

    learned = [p.text for p in (await load_or_seed_patterns(adb)).get("Development").app_patterns
               if p.learned]
    assert learned == ["Obscure IDE"]


async def test_cli_lists_and_rejects_learned_patterns(
    settings: Settings, adb: AsyncDatabase[Any], aredis: aioredis.Redis, mongo_db_name: str
) -> None:
    assert settings.mongo_db == mongo_db_name
    await _seed_patterns(adb)
    learner = Learner(aredis, adb, KeySpace(), learn_after=2, min_users=2)
    verdicts = {("Obscure IDE", "", f"t{i}"): "Development" for i in range(2)}
    users = {k: {f"user-{i}"} for i, k in enumerate(verdicts)}
    assert [p.pattern for p in await learner.observe(verdicts, users)] == ["Obscure IDE"]

    out = io.StringIO()
    assert await asyncio.to_thread(learned_command, settings, None, out) == 0
    assert "active\tDevelopment\tapp\tObscure IDE\t2\t2\t" in out.getvalue()

    out = io.StringIO()
    assert await asyncio.to_thread(learned_command, settings, "Obscure IDE", out) == 0
    patterns = await load_or_seed_patterns(adb)
    assert all(p.text != "Obscure IDE" for p in patterns.get("Development").app_patterns)
    review = await adb["learned_pattern_review"].find_one({"_id": "app:obscure ide"})
    assert review is not None and review["status"] == "rejected"
    assert await aredis.get(KeySpace().patterns_version_key) == b"2"

    # Never learned again, even with fresh evidence.
    await aredis.flushall()
    assert await learner.observe(verdicts, users) == []
    out = io.StringIO()
    assert await asyncio.to_thread(learned_command, settings, "Obscure IDE", out) == 1
    out = io.StringIO()
    await asyncio.to_thread(learned_command, settings, None, out)
    assert out.getvalue().strip() == "no learned patterns"


async def test_learning_needs_unanimous_verdicts(
    adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    await _seed_patterns(adb)
    learner = Learner(aredis, adb, KeySpace(), learn_after=2, min_users=1)
    first: ClassKey = ("Tool", "", "a")
    assert await learner.observe({first: "Development"}, {first: ["u"]}) == []
    assert await learner.observe({("Tool", "", "b"): "Design"}) == []
    assert await learner.observe({("Tool", "", "c"): "Development"}) == []


async def test_patterns_learned_by_concurrent_requests_are_all_kept(
    adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    # The resolver runs one learning step per LLM request, several at once: each must
    # not overwrite the pattern set another one just saved (found by benchmark h).
    await _seed_patterns(adb)
    learner = Learner(aredis, adb, KeySpace(), learn_after=2, min_users=1)
    apps = [f"Quarkle{i:02d} Studio" for i in range(12)]
    batches = [{(app, "", f"t{i}"): "Development" for i in range(2)} for app in apps]
    one_user = ("u1",)
    learned = await asyncio.gather(
        *(learner.observe(b, dict.fromkeys(b, one_user)) for b in batches)
    )
    assert sorted(p.pattern for ps in learned for p in ps) == sorted(apps)
    stored = await load_or_seed_patterns(adb)
    kept = {p.text for p in stored.get("Development").app_patterns if p.learned}
    assert kept == set(apps)
