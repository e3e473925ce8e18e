"""ZINCRBY calls and script arguments per event against the number of events per commit:
what a larger commit (a bigger batch, or a group commit merging several) saves Redis.

    .venv/bin/python -m benchmarks.commit_size [--events 16000]

Pure: the `pomocore demo` workload (3,000 users, events over 3 days), validated and
classified, planned in commits of 500 ... 16,000 events.
"""

from __future__ import annotations

import argparse
import time

from pomocore.classifiers import Classifier, load_default_pattern_set
from pomocore.core.events import Event, parse_entry
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.sinks.commit import script_arguments
from pomocore.sinks.plan import IncrementBuilder
from pomocore.workload import Workload


def classified(n: int) -> list[tuple[Event, str]]:
    classifier = Classifier.from_patterns(load_default_pattern_set())
    out = []
    workload = Workload(users=3000, distinct_variants=200, malformed_ratio=0)
    for i, fields in enumerate(workload.events(n)):
        raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
        event = parse_entry(f"{i + 1}-0", raw, now_s=time.time())
        out.append((event, classifier.classify(event.app, event.url, event.title).category))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=16_000)
    n = parser.parse_args().events
    events = classified(n)
    keys = KeySpace()
    builder = IncrementBuilder(keys, PeriodCalculator("Asia/Seoul"))
    print("events per commit   ZINCRBY per event   arguments per event")
    for size in (500, 1_000, 2_000, 4_000, 8_000, 16_000):
        zincrby = arguments = 0
        for start in range(0, n, size):
            plan = builder.plan(events[start : start + size], [])
            zincrby += plan.increment_count
            arguments += len(script_arguments(plan, keys, "g", "c")[1])
        print(f"{size:>17,} {zincrby / n:>19.2f} {arguments / n:>21.2f}")


if __name__ == "__main__":
    main()
