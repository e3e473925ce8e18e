"""A commit the script refuses (a key of the wrong type) holds the batch: nothing is
acknowledged or written, the consumer goes on retrying, and once the key is fixed every
event counts once."""

from __future__ import annotations

import pytest
import redis

from pomocore.core.settings import Settings
from tests.support.consumer import running_consumer
from tests.support.expected import actual_leaderboards, assert_exact
from tests.support.streams import dead_letters, group_state, is_drained, now_fields, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)


async def test_a_wrong_type_dead_letter_key_holds_the_batch_until_fixed(settings: Settings) -> None:
    good = [now_fields(f"u{i % 3}", "Code", 1.0 + i) for i in range(5)]
    bad = {"app": "Code", "duration": "1.0", "timestamp": "1"}  # no userId: a dead letter
    client = redis.Redis.from_url(settings.redis_url)
    client.set(settings.keys.dead_letter_key, "not a stream")
    publish(settings.redis_url, settings.keys.stream_key, [*good[:2], bad, *good[2:]])
    async with running_consumer(settings) as rt:
        await wait_until(
            lambda: rt.consumer.stats.sink_failures >= 2,
            describe=lambda: f"the refused commit was not retried: {rt.consumer.stats}",
        )
        assert group_state(settings) == (0, 6)  # read, and all still pending
        assert actual_leaderboards(settings.redis_url) == {}
        assert rt.consumer.stats.batches == 0  # nothing reported committed
        client.delete(settings.keys.dead_letter_key)  # the operator fixes the key
        await wait_until(lambda: is_drained(settings), 60, "the held batch was not committed")
    assert [f[b"dlq.reason"] for f in dead_letters(settings)] == [b"missing_field"]
    assert_exact(settings, good)
