"""Caches of (app, url, title) keys bounded in bytes (issue #14 §3): the decision cache
and the LLM resolver's maps (classifiers/lru.py). Memory measured with tracemalloc."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import pytest

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.lru import ENTRY_OVERHEAD_BYTES, KeyLRU, key_bytes
from pomocore.core.decision import ClassKey, Decision
from tests.support.memory import HANGUL, MIB
from tests.support.patterns import default_classifier


def maximal_key(i: int) -> ClassKey:
    """Distinct keys of three 8,192-character Hangul fields (~49 KB as Python strings)."""
    tag = f"{i:08d}"
    return tag + HANGUL[8:], "https://" + tag + HANGUL[16:], tag + HANGUL[8:]


def small_key(i: int) -> ClassKey:
    return f"App {i}", f"https://site{i}.example/path", f"Title number {i}"


def traced_bytes(fill: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after `fill()` (what the object it returns holds)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = fill()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, held
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("make_key", [small_key, maximal_key])
def test_what_a_map_counts_bounds_what_it_holds(make_key: Callable[[int], ClassKey]) -> None:
    n = 2000 if make_key is small_key else 200

    def fill_lru() -> KeyLRU[str]:
        lru: KeyLRU[str] = KeyLRU(10**9, 10**12)
        for i in range(n):
            lru.put(make_key(i), "Development")
        return lru

    classifier = default_classifier()  # (built outside the measurement)

    def fill_cache() -> CachingClassifier:
        cache = CachingClassifier(classifier, 10**9, max_bytes=10**12)
        cache.classify_many([make_key(i) for i in range(n)])
        return cache

    for fill in (fill_lru, fill_cache):
        used, held = traced_bytes(fill)
        counted = held.bytes  # type: ignore[attr-defined]
        # Never under (the bound holds); not far over either (the cache stays useful).
        assert used <= counted <= 2.5 * used, (fill.__name__, used, counted)


def test_the_decision_cache_stays_within_its_bytes_under_a_flood_of_maximal_keys() -> None:
    # 20,000 entries of such keys would be ~1 GB; 4 MiB holds about 80 of them. Three
    # times that many distinct keys go through; the bytes stay within the bound.
    max_bytes = 4 * MIB

    classifier = default_classifier()  # (built outside the measurement)

    def flood() -> CachingClassifier:
        cache = CachingClassifier(classifier, 20_000, max_bytes=max_bytes)
        for start in range(0, 240, 40):
            cache.classify_many([maximal_key(i) for i in range(start, start + 40)])
            assert cache.bytes <= max_bytes
        return cache

    used, held = traced_bytes(flood)
    cache = held
    assert isinstance(cache, CachingClassifier)
    assert 60 <= len(cache) <= 90
    assert used <= max_bytes
    assert cache.peek(maximal_key(239)) is not None  # the newest are kept
    assert cache.peek(maximal_key(0)) is None


def test_counts_and_bytes_both_bound_the_decision_cache() -> None:
    cache = CachingClassifier(default_classifier(), 10, max_bytes=10 * MIB)
    cache.classify_many([small_key(i) for i in range(50)])
    assert len(cache) == 10
    tiny = CachingClassifier(default_classifier(), 1000, max_bytes=1000)
    tiny.classify(*small_key(1))
    assert len(tiny) == 1  # (~580 bytes)
    tiny.classify(*maximal_key(1))  # larger than the whole budget: not kept, nothing evicted
    assert len(tiny) == 1 and tiny.peek(small_key(1)) is not None
    tiny.swap(default_classifier())
    assert (len(tiny), tiny.bytes) == (0, 0)


def test_a_long_title_match_is_not_kept_alive_by_a_shared_view() -> None:
    cache = CachingClassifier(default_classifier(), 1, max_bytes=MIB)
    long = Decision("Development", "title", "x" * 10_000)
    cache.remember(("a", "", "t1"), long)
    cache.remember(("b", "", "t2"), Decision("Development", "app", "Code"))
    assert all(len(d.pattern) <= 64 for d in cache._views)


def test_key_lru_is_an_lru_bounded_both_ways() -> None:
    lru: KeyLRU[int] = KeyLRU(3, 10**9)
    for i in range(4):
        lru.put(small_key(i), i)
    assert small_key(0) not in lru and len(lru) == 3
    assert lru.get(small_key(1)) == 1  # now the most recent
    lru.put(small_key(9), 9)
    assert small_key(2) not in lru and small_key(1) in lru
    by_bytes: KeyLRU[int] = KeyLRU(10**9, 3 * (key_bytes(maximal_key(0)) + ENTRY_OVERHEAD_BYTES))
    for i in range(10):
        by_bytes.put(maximal_key(i), i)
    assert len(by_bytes) == 3 and by_bytes.bytes <= by_bytes.max_bytes
    assert KeyLRU(0, 10**9).put(small_key(1), 1) is None  # 0: keeps nothing
