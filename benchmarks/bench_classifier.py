"""Classifier speed: uncached, cached, with 10,000 synthetic domains, and pool vs inline.

    .venv/bin/python -m benchmarks.bench_classifier [--quick]

Prints µs/event for each case. Targets (issue #3): uncached <= 2 µs, cached <= 0.3 µs.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import pygtrie

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.matchers import normalize_app
from pomocore.classifiers.patterns import PatternSet, load_default_pattern_set
from pomocore.classifiers.pool import ClassifierPool
from pomocore.core.decision import ClassKey

DEV = Path(__file__).resolve().parents[1] / "tests" / "data" / "labeled_events.dev.jsonl"
rng = random.Random(7)


def word(n: int = 8) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=n))


def workload(n: int) -> list[ClassKey]:
    """Distinct keys shaped like real traffic: dev-set events with varied titles and paths,
    plus unknown apps and unknown hosts (the slow, undecided path)."""
    base = [json.loads(line) for line in DEV.read_text("utf-8").splitlines()]
    keys: list[ClassKey] = []
    for i in range(n):
        e = base[i % len(base)]
        kind = i % 10
        if kind == 8:
            keys.append((f"{word()} {word(4)}", "", f"{word()} - {i}"))
        elif kind == 9:
            keys.append(("Google Chrome", f"https://{word()}.{word(5)}.com/{word()}?q={i}", word()))
        else:
            url = f"{e['url']}{'&' if '?' in e['url'] else '?'}i={i}" if e["url"] else ""
            keys.append((e["app"], url, f"{e['title']} {i}"))
    return keys


def per_event_us(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def bench_uncached(clf: Classifier, keys: Sequence[ClassKey]) -> float:
    classify = clf.classify
    return per_event_us(lambda: [classify(a, u, t) for a, u, t in keys], len(keys))


def bench_cached(clf: Classifier, keys: Sequence[ClassKey]) -> tuple[float, float]:
    holder = CachingClassifier(clf, len(keys) * 2)
    holder.classify_many(keys)
    many = per_event_us(lambda: holder.classify_many(keys), len(keys))
    one = holder.classify
    single = per_event_us(lambda: [one(a, u, t) for a, u, t in keys], len(keys))
    return many, single


def with_synthetic_domains(ps: PatternSet, n: int) -> tuple[PatternSet, list[str]]:
    docs = ps.documents()
    hosts = [f"{word(6)}.{rng.choice(['com', 'net', 'io', 'co.kr'])}" for _ in range(n)]
    for i, host in enumerate(hosts):
        docs[i % len(docs)]["domainPatterns"].append(host)
    return PatternSet.from_documents(docs), hosts


def bench_app_index(clf: Classifier, ps: PatternSet, apps: list[str]) -> tuple[float, float]:
    trie = pygtrie.StringTrie(separator=" ")
    for e in ps.entries:
        for p in e.app_patterns:
            trie.setdefault(normalize_app(p.text), e.category)
    lookup = clf._apps.lookup

    def via_trie() -> None:
        for a in apps:
            trie.longest_prefix(" ".join(normalize_app(a).split()))

    return per_event_us(lambda: [lookup(a) for a in apps], len(apps)), per_event_us(
        via_trie, len(apps)
    )


def classify_inline(clf: Classifier, keys: list[ClassKey]) -> list[object]:
    return [clf.classify(*x) for x in keys]


def bench_pool(
    ps: PatternSet, sizes: Sequence[int], workers: int | None = None
) -> list[tuple[int, float, float]]:
    clf = Classifier.from_patterns(ps)
    pool = ClassifierPool(ps, workers)
    rows = []
    try:
        pool.classify(workload(100))  # start the workers
        for n in sizes:
            keys = workload(n)
            inline = per_event_us(partial(classify_inline, clf, keys), n, 3) * n / 1e3
            pooled = per_event_us(partial(pool.classify, keys), n, 3) * n / 1e3
            rows.append((n, inline, pooled))
    finally:
        pool.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, help="pool processes (default: CPUs - 1)")
    parser.add_argument("--pool-only", action="store_true", help="only pool vs inline")
    parser.add_argument("--sizes", help="comma list of misses per batch for pool vs inline")
    args = parser.parse_args()
    if args.pool_only:
        report_pool(args)
        return
    n = 20_000 if args.quick else 100_000
    ps = load_default_pattern_set()
    clf = Classifier.from_patterns(ps)
    keys = workload(n)
    size = sum(len(e.app_patterns) + len(e.domain_patterns) for e in ps.entries)
    print(f"default set: {size} patterns, {n} distinct keys")
    print(f"uncached                 {bench_uncached(clf, keys):6.2f} µs/event")
    many, single = bench_cached(clf, keys)
    print(f"cached classify_many     {many:6.2f} µs/event")
    print(f"cached classify()        {single:6.2f} µs/event")

    big, hosts = with_synthetic_domains(ps, 10_000)
    big_clf = Classifier.from_patterns(big)
    big_keys = keys[: n // 2] + [
        ("Google Chrome", f"https://{rng.choice(['', 'www.', 'app.'])}{h}/x?{i}", "t")
        for i, h in enumerate(rng.choices(hosts, k=n // 2))
    ]
    print(f"+10k domains uncached    {bench_uncached(big_clf, big_keys):6.2f} µs/event")
    many, single = bench_cached(big_clf, big_keys)
    print(f"+10k domains cached many {many:6.2f} µs/event")

    apps = [a for a, _, _ in keys[:20_000]]
    walk, trie = bench_app_index(clf, ps, apps)
    print(f"app lookup: dict word walk {walk:.2f} µs, pygtrie StringTrie {trie:.2f} µs")

    report_pool(args)


def report_pool(args: argparse.Namespace) -> None:
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    else:
        sizes = [1_000, 10_000] if args.quick else [1_000, 5_000, 20_000, 50_000, 100_000]
    ps = load_default_pattern_set()
    print(f"pool ({args.workers or 'CPUs - 1'} workers) vs inline (ms per batch of misses):")
    for batch, inline, pooled in bench_pool(ps, sizes, args.workers):
        ratio = inline / pooled
        print(f"  {batch:>7} keys: inline {inline:8.1f} ms  pool {pooled:8.1f} ms  ({ratio:4.2f}x)")


if __name__ == "__main__":
    main()
