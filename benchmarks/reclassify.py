"""`pomocore patterns reclassify`: records/s inline and with the process pool (#15 §7).

    .venv/bin/python -m benchmarks.reclassify [--records 100000] [--variants 0:10000,2:50000]
        [--rounds 3] [--mongo-uri URI] [--dry-run]

Each run of a variant (`workers:page size`; rounds alternate their order) gets freshly
seeded records: N records of the classifier benchmark's distinct keys (tracker apps,
browser tabs, unknown apps and hosts; benchmarks/bench_classifier.py) stored as `AFK`
with AFK's current `categoryId`, 5 % of them as verdicts of the LLM, and the shipped
patterns. Every decided key then changes; undecided keys and LLM verdicts stay. The
command runs as an operator runs it, a child `pomocore` process; the figures are its
own (`records_per_s`: the walk, from the first read to the last write) and the child's
wall time (start-up and pattern loading included).
`--dry-run` reads and classifies without writing (the cost of the walk and the
classification alone). Embedded MongoDB-wire server (nx-27017) unless --mongo-uri names
a MongoDB (its database `pomocore_bench_reclassify_run` is dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import pymongo

from benchmarks.bench_classifier import workload
from pomocore.classifiers.patterns import COLLECTION, load_default_pattern_set
from pomocore.core.ids import categorized_data_id
from pomocore.embedded import EmbeddedMongo
from pomocore.sinks.mongo import CATEGORIZED_DATA

DB_PREFIX = "pomocore_bench_reclassify_"
INSERT_CHUNK = 5_000
LLM_EVERY = 20  # one record in 20 holds a verdict of the LLM


def seed(db: Any, records: int) -> None:
    patterns = load_default_pattern_set()
    db[COLLECTION].insert_many(patterns.documents())
    afk_id = patterns.category_ids["AFK"]  # as a consumer writes it: nothing to relink
    docs = []
    for i, (app, url, title) in enumerate(workload(records)):
        docs.append(
            {
                "_id": categorized_data_id(app, url, title),
                "app": app,
                "url": url,
                "title": title,
                "category": "AFK",
                "categoryId": afk_id,
                "isLLMBased": i % LLM_EVERY == 0,
            }
        )
        if len(docs) == INSERT_CHUNK:
            db[CATEGORIZED_DATA].insert_many(docs, ordered=False)
            docs = []
    if docs:
        db[CATEGORIZED_DATA].insert_many(docs, ordered=False)


def run(uri: str, db_name: str, workers: int, page_size: int, dry_run: bool) -> dict[str, Any]:
    args = ["--page-size", str(page_size), *(["--dry-run"] if dry_run else [])]
    if workers:
        args += ["--workers", str(workers), "--pool-threshold", str(page_size)]
    env = {**os.environ, "POMOCORE_MONGO_URI": uri, "POMOCORE_MONGO_DB": db_name}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pomocore.cli", "patterns", "reclassify", "--json", *args],
        env=env,
        capture_output=True,
        check=False,
    )
    if result.returncode:
        sys.exit(f"reclassify exited {result.returncode}: {result.stderr.decode()[-2000:]}")
    doc: dict[str, Any] = json.loads(result.stdout)
    doc["wall_s"] = time.perf_counter() - started
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--variants",
        default="0:10000,2:50000",
        help="workers:page size, ... (default: "
        "inline with its default page, and 2 workers with the default --pool-threshold)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument("--mongo-uri", help="a MongoDB to use (default: an embedded nx-27017)")
    parser.add_argument("--dry-run", action="store_true", help="read and classify only (no writes)")
    args = parser.parse_args()
    variants = [(int(w), int(p)) for w, p in (v.split(":") for v in args.variants.split(","))]
    with ExitStack() as stack:
        uri = args.mongo_uri or stack.enter_context(EmbeddedMongo()).url
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
        stack.callback(client.close)
        stack.callback(client.drop_database, DB_PREFIX + "run")
        print(f"{args.records:,} records, {os.cpu_count()} CPUs")
        print("round | workers | page | records/s (walk) | wall s | changed | pooled keys | load")
        rates: dict[tuple[int, int], list[int]] = {v: [] for v in variants}
        for round_ in range(args.rounds):
            # every other round in reverse order: a load that drifts favours no variant
            for workers, page in variants if round_ % 2 == 0 else variants[::-1]:
                client.drop_database(DB_PREFIX + "run")  # each run on the same fresh records
                seed(client[DB_PREFIX + "run"], args.records)
                load = os.getloadavg()[0]
                doc = run(uri, DB_PREFIX + "run", workers, page, args.dry_run)
                rates[(workers, page)].append(doc["records_per_s"])
                print(
                    f"{round_ + 1} | {workers} | {page:,} | {doc['records_per_s']:,} | "
                    f"{doc['wall_s']:.1f} | {doc['changed']:,} | {doc['pooled_keys']:,} | "
                    f"{load:.1f}",
                    flush=True,
                )
        for (workers, page), found in rates.items():
            print(f"workers {workers}, page {page:,}: median {statistics.median(found):,.0f} "
                  f"records/s ({', '.join(f'{r:,}' for r in found)})")  # fmt: skip


if __name__ == "__main__":
    main()
