"""Learning you can trust (#15 §3): distinct users, operator approval, a cap, visibility.

Real Redis and MongoDB-wire servers; verdicts come from the scripted LLM server through
the resolver, the call that feeds the learner.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.llm.learning import Learner
from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.store import load_or_seed_patterns, save_patterns
from pomocore.consumers.batch import _users_of
from pomocore.core.decision import ClassKey
from pomocore.core.errors import ConfigError
from pomocore.core.events import Event
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.learned_cli import learned_command
from tests.support.fake_llm import FakeLLM
from tests.support.resolver import MakeResolver
from tests.support.waiting import wait_until

GAME_SITE = "games.example"


async def _settled(resolver: Any) -> None:
    """Learning runs after the answers are handed out: wait for the requests to finish."""
    await wait_until(lambda: not resolver._tasks, 30.0, "llm requests still running")


async def _learned(db: AsyncDatabase[Any]) -> list[str]:
    patterns = await load_or_seed_patterns(db)
    return sorted(
        p.text for e in patterns.entries for p in (*e.app_patterns, *e.domain_patterns)
        if p.learned
    )


def _events(
    n: int, users: list[str], host: str = GAME_SITE
) -> tuple[list[ClassKey], dict[ClassKey, set[str]]]:
    """n crafted events on one host, fresh titles (memory cannot answer), user i % len."""
    keys: list[ClassKey] = [("Firefox", f"https://{host}/p{i}", f"crafted {i}") for i in range(n)]
    return keys, {k: {users[i % len(users)]} for i, k in enumerate(keys)}


@pytest.fixture
async def empty_patterns(adb: AsyncDatabase[Any]) -> None:
    await save_patterns(adb, PatternSet.from_documents([]))


@pytest.mark.usefixtures("empty_patterns")
async def test_twelve_events_from_one_user_never_promote(
    fake_llm: FakeLLM, make_resolver: MakeResolver, adb: AsyncDatabase[Any],
    aredis: aioredis.Redis,
) -> None:
    fake_llm.rule = lambda item: "Development"  # the model obeys the crafted titles
    resolver = make_resolver(learn_after=5, learn_min_users=3, window_s=0.0)
    keys, users = _events(12, ["mallory"])
    for i in range(0, 12, 3):
        answered = await resolver.resolve(keys[i : i + 3], {k: users[k] for k in keys[i : i + 3]})
        assert {d.category for d in answered.values()} == {"Development"}
    await _settled(resolver)
    assert await aredis.hgetall(KeySpace().learning_counter_key("domain", GAME_SITE)) == {
        b"Development": b"12"
    }  # all 12 verdicts were counted ...
    assert resolver.stats.learned_patterns == 0  # ... and none promoted
    assert await _learned(adb) == []


@pytest.mark.usefixtures("empty_patterns")
async def test_the_same_events_from_enough_distinct_users_promote(
    fake_llm: FakeLLM, make_resolver: MakeResolver, adb: AsyncDatabase[Any]
) -> None:
    fake_llm.rule = lambda item: "Game"
    resolver = make_resolver(learn_after=5, learn_min_users=3, window_s=0.0)
    keys, users = _events(12, ["ann", "bob"])
    for i in range(0, 12, 3):
        await resolver.resolve(keys[i : i + 3], {k: users[k] for k in keys[i : i + 3]})
    await _settled(resolver)
    assert await _learned(adb) == []  # 12 unanimous verdicts, but two users only
    more: list[ClassKey] = [("Firefox", f"https://{GAME_SITE}/x", "third user")]
    await resolver.resolve(more, {more[0]: {"cho"}})
    await _settled(resolver)
    assert await _learned(adb) == [GAME_SITE]
    review = await adb["learned_pattern_review"].find_one({"_id": f"domain:{GAME_SITE}"})
    assert review is not None and review["users"] == 3 and review["verdicts"] == 13


@pytest.mark.usefixtures("empty_patterns")
async def test_verdicts_without_users_never_promote(
    adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    learner = Learner(aredis, adb, KeySpace(), learn_after=2, min_users=1)
    keys, _ = _events(10, ["-"])
    assert await learner.observe(dict.fromkeys(keys, "Game")) == []  # the reclassifier's
    assert await _learned(adb) == []


def test_the_batch_hands_each_undecided_key_its_users() -> None:
    def event(user: str, title: str) -> Event:
        return Event(f"1-{title}", user, "Tool", title, "", 10, 0)

    events = [event("b", "x"), event("a", "x"), event("b", "x"), event("a", "y"), event("c", "z")]
    # Distinct users in event order: the first (b for x) owns the key's request and share.
    assert _users_of([("Tool", "", "x"), ("Tool", "", "y")], events) == {
        ("Tool", "", "x"): ["b", "a"],
        ("Tool", "", "y"): ["a"],
    }


@pytest.mark.usefixtures("empty_patterns")
async def test_approve_mode_holds_patterns_until_an_operator_approves(
    settings: Settings, adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    learner = Learner(aredis, adb, KeySpace(), learn_after=3, min_users=3, mode="approve")
    keys, users = _events(3, ["ann", "bob", "cho"])
    assert await learner.observe(dict.fromkeys(keys, "Game"), users) == []
    assert await _learned(adb) == []  # pending, not active
    more, more_users = _events(3, ["dan"])  # more evidence does not activate it either
    assert await learner.observe(dict.fromkeys(more, "Game"), more_users) == []

    out = io.StringIO()
    assert await asyncio.to_thread(learned_command, settings, None, out) == 0
    assert f"pending\tGame\tdomain\t{GAME_SITE}\t3\t3\t" in out.getvalue()

    out = io.StringIO()
    assert await asyncio.to_thread(learned_command, settings, None, out, approve=GAME_SITE) == 0
    assert await _learned(adb) == [GAME_SITE]
    assert await aredis.get(KeySpace().patterns_version_key) == b"1"  # announced
    out = io.StringIO()
    await asyncio.to_thread(learned_command, settings, None, out)
    assert out.getvalue().startswith(f"active\tGame\tdomain\t{GAME_SITE}\t3\t3\t")
    out = io.StringIO()  # nothing pending any more
    assert await asyncio.to_thread(learned_command, settings, None, out, approve=GAME_SITE) == 1


@pytest.mark.usefixtures("empty_patterns")
async def test_a_rejected_pending_pattern_is_never_learned(
    settings: Settings, adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    learner = Learner(aredis, adb, KeySpace(), learn_after=1, min_users=1, mode="approve")
    keys, users = _events(1, ["ann"])
    await learner.observe(dict.fromkeys(keys, "Game"), users)
    out = io.StringIO()
    assert await asyncio.to_thread(learned_command, settings, GAME_SITE, out) == 0
    review = await adb["learned_pattern_review"].find_one({"_id": f"domain:{GAME_SITE}"})
    assert review is not None and review["status"] == "rejected"
    await aredis.delete(KeySpace().learning_done_key)
    learner.mode = "auto"
    await learner.observe(dict.fromkeys(keys, "Game"), users)
    assert await _learned(adb) == []


@pytest.mark.usefixtures("empty_patterns")
@pytest.mark.parametrize("mode", ["auto", "approve"])
async def test_the_cap_holds(
    mode: str, adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    learner = Learner(
        aredis, adb, KeySpace(), learn_after=1, min_users=1, mode=mode,  # type: ignore[arg-type]
        max_learned=2,
    )  # fmt: skip
    for i in range(4):
        keys, users = _events(1, ["ann"], host=f"site{i}.example")
        await learner.observe(dict.fromkeys(keys, "Game"), users)
    held = await adb["learned_pattern_review"].count_documents({"status": {"$ne": "rejected"}})
    assert held == 2
    assert len(await _learned(adb)) == (2 if mode == "auto" else 0)
    # A capped subject is reconsidered once there is room (its `done` mark was dropped).
    assert not await aredis.sismember(KeySpace().learning_done_key, "domain:site3.example")


@pytest.mark.usefixtures("empty_patterns")
async def test_concurrent_learners_keep_the_cap(
    adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    # Twelve learners (as many processes) promote twelve subjects at the same moment:
    # each reads, extends and saves the whole pattern set, so without serialisation
    # saves overwrite each other and every one sees room under the cap.
    learners = [
        Learner(aredis, adb, KeySpace(), learn_after=1, min_users=1, max_learned=3)
        for _ in range(12)
    ]

    async def feed(i: int, learner: Learner) -> None:
        keys, users = _events(1, ["ann"], host=f"s{i}.example")
        await learner.observe(dict.fromkeys(keys, "Game"), users)

    await asyncio.gather(*(feed(i, lr) for i, lr in enumerate(learners)))
    assert len(await _learned(adb)) == 3  # no lost update, no overshoot


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"POMOCORE_LLM_LEARN_MIN_USERS": "0"}, "POMOCORE_LLM_LEARN_MIN_USERS"),
        ({"POMOCORE_LLM_LEARN_MODE": "yolo"}, "POMOCORE_LLM_LEARN_MODE"),
        ({"POMOCORE_LLM_LEARNED_MAX": "-1"}, "POMOCORE_LLM_LEARNED_MAX"),
        ({"POMOCORE_LLM_SEND": "everything"}, "POMOCORE_LLM_SEND"),
    ],
)
def test_learning_and_send_settings_are_validated(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_learning_defaults() -> None:
    s = Settings.from_env({})
    assert (s.llm_learn_min_users, s.llm_learn_mode, s.llm_learned_max, s.llm_send) == (
        3, "auto", 500, "full",
    )  # fmt: skip
