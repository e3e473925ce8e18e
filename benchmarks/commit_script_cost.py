"""Cost of each part of sinks/commit.lua for one real 1000-event batch (Redis commandstats):

.venv/bin/python benchmarks/commit_script_cost.py
"""

import time

import redis

from classifiers import Classifier, load_default_pattern_set
from pipeline.embedded import EmbeddedRedis
from pipeline.events import parse_entry
from pipeline.keys import KeySpace
from pipeline.periods import PeriodCalculator
from pipeline.workload import Workload
from sinks.leaderboard import COMMIT_SCRIPT, IncrementBuilder, script_arguments

ks = KeySpace()
b = IncrementBuilder(ks, PeriodCalculator("Asia/Seoul"))
clf = Classifier.from_patterns(load_default_pattern_set())
w = Workload(users=3000, distinct_variants=200, malformed_ratio=0)
evs = []
for i, f in enumerate(w.events(1000)):
    e = parse_entry(
        f"{i + 1}-0",
        {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in f.items()},
        now_s=time.time(),
    )
    evs.append((e, clf.classify(e.app, e.url, e.title).category))
plan = b.plan(evs, [])
keys, argv = script_arguments(plan, ks, "g", "c")
print("keys", len(keys), "argv", len(argv), "pairs", plan.increment_count)
full = COMMIT_SCRIPT
noop = "return 1"
valid_only = (
    full[: full.index("local claimed")].replace(
        "-- (unpack() expands only as the last argument, so build XCLAIM's argument list)", ""
    )
    + " return 1"
)
no_zincr = full.replace("redis.call('ZINCRBY', key, ARGV[pos + 1], ARGV[pos])", "")
with EmbeddedRedis() as r:
    c = redis.Redis.from_url(r.url)
    for name, script in [
        ("noop", noop),
        ("validate", valid_only),
        ("no_zincrby", no_zincr),
        ("full", full),
    ]:
        tot = 0
        for _ in range(20):
            c.flushall()
            c.xgroup_create(ks.stream_key, "g", id="0", mkstream=True)
            for i in range(1000):
                c.xadd(ks.stream_key, {"a": 1}, id=f"{i + 1}-0")
            c.xreadgroup("g", "c", {ks.stream_key: ">"}, count=1000)
            c.config_resetstat()
            try:
                c.eval(script, len(keys), *keys, *argv)
            except Exception as e:
                print(name, e)
                break
            st = c.info("commandstats")
            tot += st["cmdstat_eval"]["usec"]
        print(f"{name:12s} {tot / 20 / 1000:.2f} us/event")
