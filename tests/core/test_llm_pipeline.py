"""The LLM fallback inside the real consumer: verdicts reach MongoDB and the leaderboards,
and an unreachable endpoint never stops the pipeline from draining."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pymongo
import pytest
import redis

from pomocore.core.settings import Settings
from pomocore.embedded import free_port
from tests.support.consumer import drain
from tests.support.expected import actual_leaderboards, assert_scores_equal, reference_leaderboards
from tests.support.fake_llm import FakeLLM
from tests.support.streams import now_fields, publish

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(rule=lambda item: "Finance" if "ledger" in str(item).lower() else "Game") as llm:
        yield llm


def unknown_events() -> list[dict[str, str | bytes]]:
    events = [
        now_fields(f"u{i % 4}", f"AcmeLedger {i % 30}", 60.0, title=f"book {i % 30}")
        for i in range(90)
    ]
    events += [now_fields("u9", f"PixelQuest{i}", 30.0, title="level 1") for i in range(10)]
    events.append(now_fields("u1", "Code", 5.0, title="main.py"))  # decided by patterns
    return events


async def test_llm_verdicts_reach_mongo_and_leaderboards(settings: Settings, fake: FakeLLM) -> None:
    s = dataclasses.replace(
        settings,
        llm_base_url=fake.url + "/v1",
        llm_api_key="test",
        llm_batch_size=25,
        llm_calls_per_min=100,
        batch_size=500,
    )
    events = unknown_events()
    publish(s.redis_url, s.keys.stream_key, events)
    await drain(s)
    # Requests never mix users (issue #15 §2): AcmeLedger j is last sent by u{j % 4} in the
    # batch, PixelQuest by u9; so one request per user here, not per 25 keys.
    owners = [
        {f"u{int(i['app'].split()[1]) % 4}" if i["app"].startswith("AcmeLedger") else "u9"
         for i in r.items}
        for r in fake.requests
    ]  # fmt: skip
    assert all(len(users) == 1 for users in owners), owners
    assert 0 < fake.calls <= sum(math.ceil(n / 25) for n in (8, 8, 7, 7, 10))
    expected = ["Finance"] * 90 + ["Game"] * 10 + ["Development"]
    assert_scores_equal(
        actual_leaderboards(s.redis_url),
        reference_leaderboards(zip(events, expected, strict=True), s.timezone),
    )
    db = pymongo.MongoClient(s.mongo_uri)[s.mongo_db]
    ledger = db.categorized_data.find_one({"app": "AcmeLedger 3"})
    assert ledger is not None and ledger["category"] == "Finance" and ledger["isLLMBased"]
    code = db.categorized_data.find_one({"app": "Code"})
    assert code is not None and not code["isLLMBased"]
    assert db.pomodoro_usage_log.count_documents({"category": "Finance"}) == 90

    # A restart with the same keys asks the LLM nothing: verdicts are remembered in MongoDB.
    calls = fake.calls
    publish(s.redis_url, s.keys.stream_key, unknown_events())
    await drain(s)
    assert fake.calls == calls


async def test_unreachable_llm_never_stops_the_pipeline(settings: Settings) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    s = dataclasses.replace(settings, llm_base_url=dead_url, llm_api_key="test", llm_timeout_s=1.0)
    events = unknown_events()
    events.append(now_fields("u2", "Google Chrome", 7.0, url="https://unknown-site.example/x"))
    publish(s.redis_url, s.keys.stream_key, events)
    stats = await drain(s, timeout_s=60)
    assert stats.committed == len(events)
    expected = ["Uncategorized"] * 100 + ["Development", "Browsing"]
    assert_scores_equal(
        actual_leaderboards(s.redis_url),
        reference_leaderboards(zip(events, expected, strict=True), s.timezone),
    )
    # The undecided keys wait in the LLM queue for the background reclassifier.
    assert redis.Redis.from_url(s.redis_url).zcard(s.keys.llm_queue_key) >= 40
