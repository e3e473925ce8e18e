"""`pomocore classify` with the LLM, and pattern changes reaching a running consumer."""

from __future__ import annotations

import dataclasses
import io
import time

import orjson
import pymongo
import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from pomocore.classifiers.store import load_or_seed_patterns, publish_change, save_patterns
from pomocore.classify_cli import classify_command
from pomocore.core.settings import Settings
from tests.support.consumer import running_consumer
from tests.support.fake_llm import FakeLLM
from tests.support.streams import group_state, now_fields, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def test_classify_asks_the_llm_only_for_undecided_lines(settings: Settings) -> None:
    lines = [
        {"app": "QuantBooks Pro", "title": "ledger", "url": "", "id": 1},
        {"app": "Code", "title": "main.py", "url": "", "id": 2},
    ]
    inp = io.StringIO("".join(orjson.dumps(line).decode() + "\n" for line in lines))
    out, err = io.StringIO(), io.StringIO()
    with FakeLLM(rule=lambda item: "Finance") as fake:
        s = dataclasses.replace(settings, llm_base_url=fake.url + "/v1", llm_api_key="k")
        code = classify_command(
            None, False, out, settings=s, inp=inp, err=err, use_stored_patterns=False
        )
        assert fake.items == 1  # only the undecided line went to the LLM
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0
    assert [(r["id"], r["category"], r["source"]) for r in rows] == [
        (1, "Finance", "llm"),
        (2, "Development", "app"),
    ]


async def test_pattern_added_in_mongodb_reaches_a_running_consumer(settings: Settings) -> None:
    s = dataclasses.replace(settings, pattern_poll_s=0.5)
    db = pymongo.MongoClient(s.mongo_uri)[s.mongo_db]
    async with running_consumer(s) as rt:
        publish(s.redis_url, s.keys.stream_key, [now_fields("u1", "Zorblax Arena", 10.0)])
        await wait_until(lambda: db.pomodoro_usage_log.count_documents({}) == 1, 10)
        assert db.pomodoro_usage_log.find_one()["category"] == "Uncategorized"  # type: ignore[index]

        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(s.mongo_uri)
        stored = await load_or_seed_patterns(client[s.mongo_db])
        await save_patterns(
            client[s.mongo_db], stored.with_pattern("Game", "app", "Zorblax", learned=False)
        )
        await publish_change(aioredis.Redis.from_url(s.redis_url), s.keys)
        changed_at = time.monotonic()
        await wait_until(
            lambda: rt.classifier.classify("Zorblax Arena", "", "").category == "Game", 10
        )
        assert time.monotonic() - changed_at < 5

        publish(
            s.redis_url, s.keys.stream_key, [now_fields("u1", "Zorblax Arena", 10.0, title="2")]
        )
        await wait_until(
            lambda: db.pomodoro_usage_log.count_documents({"category": "Game"}) == 1, 10
        )
        await client.close()
    assert group_state(s) == (0, 0)

