"""Process memory of the classification path with 1M distinct URLs, by decision-cache size.

    .venv/bin/python -m benchmarks.cache_rss 20000      # the default
    .venv/bin/python -m benchmarks.cache_rss 50000

Validates, classifies and plans 1,000,000 events of the `pomocore demo` workload with
one million variants per template (nearly every URL new, as in `python -m benchmarks
--sweep rss`), without servers, and prints VmRSS/VmHWM at 50k ... 1M events: what the decision
cache costs and when the memory settles.
"""

from __future__ import annotations

import sys
import time

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.consumers.batch import validate
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.sinks.plan import IncrementBuilder
from pomocore.workload import Workload

MARKS = (50_000, 100_000, 200_000, 300_000, 500_000, 700_000, 1_000_000)


def memory_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    settings = Settings()
    cache = CachingClassifier(Classifier.from_patterns(load_default_pattern_set()), size)
    workload = Workload(users=3000, distinct_variants=1_000_000, seed=1)
    builder = IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    now, done = time.time(), 0
    print(f"decision cache {size:,} entries")
    while done < MARKS[-1]:
        entries = [
            (f"{done + i + 1}-0", {k.encode(): v if isinstance(v, bytes) else v.encode()
                                   for k, v in f.items()})
            for i, f in enumerate(workload.events(1000))
        ]  # fmt: skip
        done += 1000
        batch = validate(entries, settings, now)
        keys = [(e.app, e.url, e.title) for e in batch.accepted]
        by_key = dict(zip(keys, cache.classify_many(keys), strict=True))
        builder.plan(
            [(e, by_key[k].category) for e, k in zip(batch.accepted, keys, strict=True)], []
        )
        if done in MARKS:
            mem = memory_kb()
            print(f"{done:>9,} events  cache {len(cache):>7,}  RSS {mem['VmRSS'] / 1024:6.1f} MB"
                  f"  peak {mem['VmHWM'] / 1024:6.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
