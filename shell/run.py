"""`pomocore run` for one process: the consumer runtime with its operations surface
(metrics recorders, /metrics, probes) around it, on uvloop where it is installed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from pomocore.consumers.app import install_signal_handlers, run_until_stopped, runtime
from pomocore.core.logs import setup_logging
from pomocore.core.settings import Settings
from pomocore.health import Beat, consumer_observer, start_consumer_ops

try:
    import uvloop

    HAVE_UVLOOP = True
except ImportError:  # uvloop is not available on every platform (Windows)
    HAVE_UVLOOP = False

log = logging.getLogger("pomocore.app")

T = TypeVar("T")


def run_event_loop(coro: Coroutine[Any, Any, T]) -> T:
    if HAVE_UVLOOP:
        return uvloop.run(coro)
    return asyncio.run(coro)


async def serve(settings: Settings, beat: Beat | None = None) -> None:
    """Run one consumer process until SIGTERM/SIGINT, then drain. A supervised child
    reports its liveness to its parent through `beat`."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    observer = consumer_observer(settings)
    async with runtime(settings, observer) as rt:
        ops = start_consumer_ops(rt, stop, observer, beat)
        log.info(
            "consumer started",
            extra={"consumer": settings.consumer_name, "stream": settings.keys.stream_key},
        )
        try:
            await run_until_stopped(rt, stop)
        finally:
            ops.close()
        log.info("consumer stopped", extra={"events": rt.consumer.stats.committed})


def run_single_process(settings: Settings, beat: Beat | None = None) -> None:
    setup_logging(settings.log_format, settings.log_level)
    run_event_loop(serve(settings, beat))
