"""Live pattern reload: pub/sub for speed, polling for safety.

A change announced on `keys.patterns_channel` is picked up at once. Polling the
`keys.patterns_version_key` counter every `poll_s` covers a missed message (subscription
dropped, Redis restarted), and re-reading MongoDB every `mongo_every` polls covers an edit
made straight in MongoDB without an announcement. A reload compiles the new set off to the
side and swaps it in whole; a bad document is logged and the old matcher kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.store import load_or_seed_patterns
from pomocore.core.keys import KeySpace

log = logging.getLogger(__name__)

# How often (in polls) MongoDB itself is re-read when no announcement came.
MONGO_EVERY_POLLS = 12
# Longest a stop request waits for the watcher to notice.
_TICK_S = 0.5


async def watch_patterns(
    redis: Redis,
    db: Any,
    holder: CachingClassifier,
    keys: KeySpace,
    poll_s: float,
    stop: asyncio.Event,
    *,
    mongo_every: int = MONGO_EVERY_POLLS,
) -> None:
    """Run until `stop` is set. Never raises except CancelledError."""
    seen = await _read_version(redis, keys)
    pubsub: PubSub | None = None
    polls = 0
    next_poll = time.monotonic() + poll_s
    try:
        while not stop.is_set():
            pubsub = pubsub or await _subscribe(redis, keys)
            announced = await _wait_message(pubsub, min(poll_s, _TICK_S))
            if announced is None:  # subscription broke: resubscribe next round
                pubsub = None
                await _sleep_unless(stop, min(poll_s, 1.0))
            due = time.monotonic() >= next_poll
            if not (announced or due):
                continue
            if due:
                next_poll = time.monotonic() + poll_s
                polls += 1
            current = await _read_version(redis, keys)
            if announced or current != seen or polls % mongo_every == 0:
                if await reload_once(db, holder):
                    log.info("patterns reloaded: %s (counter %s)", holder.version, current)
                seen = current
    finally:
        if pubsub is not None:
            await _close(pubsub)


async def reload_once(db: Any, holder: CachingClassifier) -> bool:
    """Load, compile and swap in the stored set if it differs. True if swapped."""
    try:
        pattern_set = await load_or_seed_patterns(db)
        if pattern_set.version == holder.version:
            return False
        classifier = Classifier.from_patterns(pattern_set)
    except asyncio.CancelledError:
        raise
    except Exception:  # a bad pattern doc must not take the consumer down
        log.exception("pattern reload failed; keeping patterns %s", holder.version)
        return False
    holder.swap(classifier)
    return True


async def _subscribe(redis: Redis, keys: KeySpace) -> PubSub | None:
    try:
        pubsub = redis.pubsub()
        await pubsub.subscribe(keys.patterns_channel)
        return pubsub
    except Exception:
        log.warning("cannot subscribe to %s; polling only", keys.patterns_channel, exc_info=True)
        return None


async def _wait_message(pubsub: PubSub | None, wait_s: float) -> bool | None:
    """True on an announcement, False on timeout, None when there is no working subscription."""
    if pubsub is None:
        return None
    try:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.warning("pattern subscription lost; resubscribing", exc_info=True)
        await _close(pubsub)
        return None
    return msg is not None and msg.get("type") == "message"


async def _read_version(redis: Redis, keys: KeySpace) -> bytes | None:
    try:
        value = await redis.get(keys.patterns_version_key)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.warning("cannot read %s", keys.patterns_version_key, exc_info=True)
        return None
    return value if isinstance(value, bytes) or value is None else str(value).encode()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _close(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    except Exception:
        log.debug("closing pubsub failed", exc_info=True)
