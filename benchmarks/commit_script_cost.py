"""Cost of each part of sinks/commit.lua for one real 1000-event batch (Redis commandstats):

    .venv/bin/python -m benchmarks.commit_script_cost [--reps 30]

The script is cut after each of its stages (arguments only, validation, the XACK fence,
everything but the ZINCRBYs, everything) and each cut runs on the same batch of pending
entries, the cuts interleaved rep by rep so a drifting machine biases none of them.
Prints the median and minimum EVALSHA time per event of each cut.
"""

from __future__ import annotations

import argparse
import statistics

import redis

from benchmarks.commit_size import classified
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.embedded import EmbeddedRedis
from pomocore.sinks.commit import COMMIT_SCRIPT, script_arguments
from pomocore.sinks.plan import CommitPlan, IncrementBuilder

BATCH = 1000
FENCE = "-- The fence:"
EFFECTS = "pos = dead_at + 1"
ZINCRBY = "redis.call('ZINCRBY', KEYS[k], amount, member)"


def cuts() -> dict[str, str]:
    full = COMMIT_SCRIPT
    assert FENCE in full and EFFECTS in full and ZINCRBY in full, "commit.lua changed"
    done = "\nreturn {1, 0}\n"
    return {
        "arguments only": "return {1, 0}",
        "+ validation": full[: full.index(FENCE)] + done,
        "+ XACK fence": full[: full.index(EFFECTS)] + done,
        "all but ZINCRBY": full.replace(ZINCRBY, ""),
        "full script": full,
    }


def batch_plan(keys: KeySpace) -> CommitPlan:
    builder = IncrementBuilder(keys, PeriodCalculator("Asia/Seoul"))
    return builder.plan(classified(BATCH), [])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=30)
    reps = parser.parse_args().reps
    keys = KeySpace()
    plan = batch_plan(keys)
    script_keys, argv = script_arguments(plan, keys, "g", "c")
    print(
        f"{BATCH} events: {len(script_keys) - 4} keys in {len(plan.blocks)} blocks, "
        f"{len(argv)} arguments, {plan.increment_count} ZINCRBY"
    )
    scripts = cuts()
    per_event: dict[str, list[float]] = {name: [] for name in scripts}
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        shas = {name: client.script_load(body) for name, body in scripts.items()}
        for _ in range(reps):
            for name, sha in shas.items():
                client.delete(keys.stream_key)
                client.xgroup_create(keys.stream_key, "g", id="0", mkstream=True)
                pipe = client.pipeline(transaction=False)
                for i in range(BATCH):
                    pipe.xadd(keys.stream_key, {"a": 1}, id=f"{i + 1}-0")
                pipe.execute()
                client.xreadgroup("g", "c", {keys.stream_key: ">"}, count=BATCH)
                client.config_resetstat()
                client.evalsha(sha, len(script_keys), *script_keys, *argv)
                usec = client.info("commandstats")["cmdstat_evalsha"]["usec"]
                per_event[name].append(usec / BATCH)
    for name, values in per_event.items():
        median = statistics.median(values)
        print(f"{name:16s} median {median:6.2f}  min {min(values):6.2f} µs/event")


if __name__ == "__main__":
    main()
