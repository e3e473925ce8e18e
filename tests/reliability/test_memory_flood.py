"""A flood of distinct events with maximal Hangul texts keeps a consumer process under
its documented memory bound (issue #14 §3; docs/operations.md, "Memory").

Real Valkey and a real `pomocore run`, in two setups:
- `leaderboard`: POMOCORE_SINKS=leaderboard, no LLM: the read and decision-cache terms.
- `mongodb+llm`: every sink, on a MongoDB-wire server (nx-27017), and the LLM configured
  against the scripted server (tests/support/fake_llm.py), with a budget that never binds:
  every key of the flood is undecided, so the LLM is asked for each; it answers half of
  them (the verdict memory fills) and answers the other half invalidly, again when asked
  item by item (the memory of rejected keys fills), and every batch read waits for it (up
  to POMOCORE_LLM_WAITING_BATCHES held at once): the bound's MongoDB/BSON and LLM terms
  are all in play.

The issue asks for 1M events; on this 2-core machine the run instead goes until the
decision cache is full (1,347 events), then three times as many events again, which is
where an unbounded cache would keep growing and a bounded one has nothing left to take
(5,388 events of 74 KB: 400 MB of stream). The LLM memories fill sooner (~340 keys each).

`mongodb+llm` stops after the cache is full and as many events again (2,694): through the
LLM (a request per 25 keys, the odd keys asked again) a fill takes ~22 s here, against
~5 s with neither MongoDB nor an LLM, so four fills took 95 s on their own. Two reach
every term's plateau: in a four-fill run the peak RSS after each fill was 254, 319, 323
and 323 MiB.

Every event must be classified and counted: none dead-lettered. (A lane that walked its
pending list after the cut-off read re-read the events waiting for the LLM from the
list's start, again and again, until POMOCORE_MAX_DELIVERIES dead-lettered them;
consumers/consumer.py now walks past them.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from pomocore.core.categories import canonical
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis, free_port
from tests.support.fake_llm import FakeLLM, Item
from tests.support.http_client import metric_value, scrape_metrics
from tests.support.memory import MIB, documented_bound_bytes, maximal_event, peak_rss_bytes
from tests.support.processes import server_env, spawn_consumer
from tests.support.servers import running, with_servers
from tests.support.streams import group_state
from tests.support.waiting import wait_for

KEY_BYTES = 49_800  # what the decision cache counts per such key (classifiers/lru.py)
NOT_A_CATEGORY = "Spreadsheets"  # what the scripted LLM answers for the odd events
assert canonical(NOT_A_CATEGORY) is None


@dataclass(frozen=True)
class Setup:
    """What the flooded consumer writes to, and whether it asks an LLM."""

    name: str
    mongo: bool
    llm: bool
    fills: int  # how many times the decision cache's worth of keys is published


SETUPS = [
    Setup("leaderboard", mongo=False, llm=False, fills=4),
    Setup("mongodb+llm", mongo=True, llm=True, fills=2),
]


def half_invalid(item: Item) -> str:
    """The scripted model: a category for even events, a label that is none for odd ones
    (the app's first 8 characters are the event's number)."""
    return "Development" if int(item["app"][:8]) % 2 == 0 else NOT_A_CATEGORY


@contextmanager
def consumer_env(setup: Setup, settings: Settings, port: int) -> Iterator[dict[str, str]]:
    """Servers of the flood's own, and the environment of a consumer that uses them."""
    with ExitStack() as stack:
        server = stack.enter_context(running(EmbeddedRedis()))
        env = {"POMOCORE_METRICS_PORT": str(port), "POMOCORE_SINKS": "leaderboard"}
        mongo_uri = None
        if setup.mongo:
            mongo_uri = stack.enter_context(running(EmbeddedMongo())).url
            env["POMOCORE_SINKS"] = "mongo,leaderboard"
        env = {**server_env(with_servers(settings, server.url, mongo_uri)), **env}
        if setup.llm:
            llm = stack.enter_context(FakeLLM(rule=half_invalid))
            env |= {
                "POMOCORE_LLM_BASE_URL": llm.url,
                "POMOCORE_LLM_API_KEY": "flood",
                "POMOCORE_LLM_CALLS_PER_MIN": "100000",
                "POMOCORE_LLM_TOKENS_PER_MIN": "100000000",
                "POMOCORE_LLM_USER_SHARE": "1.0",
            }
        yield env


@pytest.mark.timeout(600)
@pytest.mark.parametrize("setup", SETUPS, ids=[s.name for s in SETUPS])
def test_a_flood_of_maximal_hangul_events_stays_under_the_memory_bound(
    setup: Setup, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    with consumer_env(setup, settings, port) as env:
        defaults = Settings.from_env({k: v for k, v in env.items() if "_LLM_" in k})
        fill = defaults.decision_cache_bytes // KEY_BYTES  # ~1,350 keys fill the cache
        total = setup.fills * fill  # full, then more keys than it can keep
        flooded = Settings.from_env(env)
        stream = flooded.keys.stream_key
        client = redis.Redis.from_url(env["POMOCORE_REDIS_URL"])
        with spawn_consumer(env, log=tmp_path / "run.log") as consumer:
            samples: list[float] = []  # the cache's bytes after each fill of the flood
            peaks: list[int] = []  # and the peak RSS so far
            for start in range(0, total, fill):
                pipe = client.pipeline(transaction=False)
                for i in range(start, min(total, start + fill)):
                    pipe.xadd(stream, maximal_event(i))  # type: ignore[arg-type]
                    if i % 200 == 199:
                        pipe.execute()
                pipe.execute()
                wait_for(lambda: group_state(flooded) == (0, 0) or consumer.poll() is not None, 240)
                assert consumer.poll() is None, consumer.output()[-3000:]
                samples.append(_synced_cache_bytes(port, misses=min(total, start + fill)))
                peaks.append(peak_rss_bytes(consumer.proc.pid))
            llm_keys = _llm_keys(port) if setup.llm else {}
            peak = peak_rss_bytes(consumer.proc.pid)
            assert consumer.stop() == 0, consumer.output()[-3000:]
        dead_letters = client.xlen(flooded.keys.dead_letter_key)
        client.close()
    bound = documented_bound_bytes(defaults)
    print(
        f"{setup.name}: {total} events; decision cache after each {fill}: "
        f"{[round(b / MIB, 1) for b in samples]} MiB; LLM keys {llm_keys}; peak RSS so far "
        f"{[round(b / MIB) for b in peaks]} MiB; documented bound {bound / MIB:.0f} MiB"
    )
    assert dead_letters == 0  # every event was classified and counted
    assert samples[0] >= 0.9 * defaults.decision_cache_bytes  # full after the first fill
    assert max(samples) <= defaults.decision_cache_bytes  # and held there
    if setup.llm:  # both LLM memories were offered more than they keep
        memory_fill = defaults.llm_memory_bytes // KEY_BYTES
        assert llm_keys["verdict"] >= 2 * memory_fill, llm_keys
        assert llm_keys["invalid"] >= 2 * memory_fill, llm_keys
    assert peak < bound, f"peak RSS {peak / MIB:.0f} MiB over {bound / MIB:.0f} MiB"


def _synced_cache_bytes(port: int, misses: int) -> float:
    """pomocore_classifier_cache_bytes once the metrics sync (every 5 s) has counted
    `misses` decision-cache misses (every event of the flood is one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            samples = scrape_metrics(port)
        except OSError:  # the ops server not up yet
            samples = {}
        if metric_value(samples, "pomocore_classifier_cache_misses_total") >= misses:
            return metric_value(samples, "pomocore_classifier_cache_bytes")
        time.sleep(0.2)
    raise AssertionError(f"the metrics never counted {misses} cache misses")


def _llm_keys(port: int) -> dict[str, float]:
    """pomocore_llm_keys_total by outcome (the sync that counted the last misses counted
    these too: the flood is drained)."""
    samples = scrape_metrics(port)
    outcomes = ("verdict", "invalid", "cache_hit", "coalesced", "queued")
    return {o: metric_value(samples, "pomocore_llm_keys_total", outcome=o) for o in outcomes}
