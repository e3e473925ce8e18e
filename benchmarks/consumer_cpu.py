"""Consumer CPU per stage of a batch, without the event loop or the network.

    .venv/bin/python -m benchmarks.consumer_cpu [--batches 20]

Real XREADGROUP replies (raw, as the consumer reads them, and through redis-py's parser)
of the `pomocore demo` workload from an embedded Valkey, then each stage of
BatchProcessor.process timed alone over all batches (best of 5, µs per event): reply
parsing, validation (in columns, and entry by entry: `validate_each`, the path the
columns fall back to; also each batch alone, warm), classification (cached), the commit
plan, the script arguments and the packing of the request.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
from hiredis import pack_command
from redis._parsers.helpers import parse_xread_resp3_to_resp2_legacy

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.consumers.batch import Entry, validate, validate_each
from pomocore.consumers.consumer import stream_entries
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from pomocore.sinks.commit import script_arguments
from pomocore.sinks.plan import IncrementBuilder
from pomocore.workload import Workload


def raw_replies(batches: int) -> list[Any]:
    workload = Workload(users=3000, distinct_variants=200, seed=1)
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        pipe = client.pipeline(transaction=False)
        for i, fields in enumerate(workload.events(1000 * batches)):
            pipe.xadd("s", fields)  # type: ignore[arg-type]
            if i % 1000 == 999:
                pipe.execute()
        client.xgroup_create("s", "g", id="0")
        conn = client.connection_pool.get_connection()
        replies = []
        for _ in range(batches):
            conn.send_command(  # type: ignore[no-untyped-call]
                "XREADGROUP", "GROUP", "g", "c", "COUNT", 1000, "STREAMS", "s", ">"
            )
            replies.append(conn.read_response())
        client.connection_pool.release(conn)
        return replies


def _with_value(flat: list[bytes], name: bytes, value: bytes) -> list[bytes]:
    """A flat entry with `name`'s value replaced."""
    out = list(flat)
    if name in out[0::2]:
        out[2 * out[0::2].index(name) + 1] = value
    return out


def per_event_us(fn: Callable[[], object], events: int) -> float:
    """Best of 5, in CPU time: on a shared machine, time spent descheduled is not ours."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    replies = raw_replies(args.batches)
    n = 1000 * args.batches
    settings, keys = Settings(), KeySpace()
    s = settings
    now = time.time()
    rows: list[tuple[str, float]] = []

    def legacy() -> list[list[Entry]]:
        return [
            [(i.decode(), f) for i, f in parse_xread_resp3_to_resp2_legacy(r)[0][1]]  # type: ignore[no-untyped-call]
            for r in replies
        ]

    def row(name: str, fn: Callable[[], object]) -> None:
        rows.append((name, per_event_us(fn, n)))

    row("reply: redis-py parser (dict per entry)", legacy)
    row("reply: raw (what the consumer reads)", lambda: [stream_entries(r) for r in replies])
    batches = [stream_entries(r) for r in replies]
    as_dicts = legacy()
    row("validate: dict entries", lambda: [validate(b, settings, now) for b in as_dicts])
    row("validate: flat entries", lambda: [validate(b, settings, now) for b in batches])
    row("validate: flat entries, one by one", lambda: [validate_each(b, s, now) for b in batches])
    # A batch just used, in the CPU caches (the rows above go over all batches in turn):
    # the median over the batches of each one's best of 5.
    warm = [per_event_us(functools.partial(validate, b, s, now), len(b)) for b in batches]
    rows.append(("validate: warm", statistics.median(warm)))
    warm = [per_event_us(functools.partial(validate_each, b, s, now), len(b)) for b in batches]
    rows.append(("validate one by one: warm", statistics.median(warm)))
    # The worst case of the columns: a slice whose every entry is rejected (bad durations).
    flat_ones = [(i, f) for b in batches for i, f in b if isinstance(f, list)]
    bad: list[Entry] = [(i, _with_value(f, b"duration", b"-1")) for i, f in flat_ones[:500]]
    rejected = per_event_us(functools.partial(validate, bad, s, now), len(bad))
    rows.append(("validate: 500 rejected", rejected))
    rejected = per_event_us(functools.partial(validate_each, bad, s, now), len(bad))
    rows.append(("validate one by one: 500 rejected", rejected))
    one_bad = [bad[0], *flat_ones[1:500]]  # the first entry rejected: the columns' worst
    rejected = per_event_us(functools.partial(validate, one_bad, s, now), len(one_bad))
    rows.append(("validate: 500, the first rejected", rejected))
    rejected = per_event_us(functools.partial(validate_each, one_bad, s, now), len(one_bad))
    rows.append(("validate one by one: 500, the first rejected", rejected))
    validated = [validate(b, settings, now) for b in batches]
    cache = CachingClassifier(Classifier.from_patterns(load_default_pattern_set()), 20_000)

    def classify() -> list[list[tuple[Any, str]]]:
        out = []
        for v in validated:
            ks = [(e.app, e.url, e.title) for e in v.accepted]
            by_key = dict(zip(ks, cache.classify_many(ks), strict=True))
            out.append([(e, by_key[k].category) for e, k in zip(v.accepted, ks, strict=True)])
        return out

    classify()  # warm the cache: the steady state
    row("classify (cached)", classify)
    accepted = classify()
    builder = IncrementBuilder(keys, PeriodCalculator("Asia/Seoul"))
    pairs = list(zip(accepted, validated, strict=True))
    row("plan", lambda: [builder.plan(a, v.dead_letters) for a, v in pairs])
    plans = [builder.plan(a, v.dead_letters) for a, v in pairs]
    row("script_arguments", lambda: [script_arguments(p, keys, "g", "c") for p in plans])
    argvs = [script_arguments(p, keys, "g", "c") for p in plans]
    sha = "0" * 40
    row(
        "pack_command (hiredis)",
        lambda: [pack_command(("EVALSHA", sha, len(k), *k, *a)) for k, a in argvs],
    )
    for name, us in rows:
        print(f"{name:42s} {us:6.2f} µs/event")


if __name__ == "__main__":
    main()
