"""CachingClassifier: LRU bound, counters, what a hit returns, swap, remember, the pool."""

from __future__ import annotations

from pomocore.classifiers.cache import CachingClassifier
from pomocore.core.decision import Decision
from tests.support.patterns import make_classifier

DOCS = (
    {"category": "Browsing", "appPatterns": ["Arc"]},
    {"category": "Development", "appPatterns": ["Code"], "domainPatterns": ["github.com"]},
)


def holder(size: int = 3, **kw: int) -> CachingClassifier:
    return CachingClassifier(make_classifier(*DOCS), size, **kw)


def test_hit_returns_cache_source_and_peek_keeps_the_original() -> None:
    h = holder()
    assert h.classify("Code", "", "a") == Decision("Development", "app", "Code")
    assert h.classify("Code", "", "a") == Decision("Development", "cache", "Code")
    assert (h.hits, h.misses) == (1, 1)
    assert h.peek(("Code", "", "a")) == Decision("Development", "app", "Code")


def test_undecided_stays_undecided_on_a_hit() -> None:
    h = holder()
    h.classify("Unknown", "", "")
    d = h.classify("Unknown", "", "")
    assert d == Decision("Uncategorized", "default", "") and not d.decided
    assert h.hits == 1


def test_lru_evicts_the_least_recently_used() -> None:
    h = holder(size=2)
    h.classify("Code", "", "1")
    h.classify("Code", "", "2")
    h.classify("Code", "", "1")  # 1 is now the most recent
    h.classify("Code", "", "3")  # evicts 2
    assert len(h) == 2
    assert h.peek(("Code", "", "2")) is None
    assert h.peek(("Code", "", "1")) is not None


def test_classify_many_of_cached_keys_touches_them_in_order() -> None:
    """A batch whose keys are all cached (the path without a loop) serves the cached
    decisions and makes its keys the most recent, the last one most of all."""
    h = holder(size=3)
    h.classify_many([("Code", "", "1"), ("Code", "", "2"), ("Code", "", "3")])
    served = h.classify_many([("Code", "", "2"), ("Code", "", "1")])
    assert served == [Decision("Development", "cache", "Code")] * 2
    assert (h.hits, h.misses) == (2, 3)
    h.classify("Code", "", "4")  # evicts 3, then the least recent
    h.classify("Code", "", "5")  # evicts 2
    assert [h.peek(("Code", "", n)) is not None for n in "12345"] == [
        True, False, False, True, True,
    ]  # fmt: skip


def test_classify_many_touches_hits_before_storing_misses() -> None:
    """Hits and misses in one batch: the hits are touched in order, then the misses are
    stored (most recent), as a loop over the keys did."""
    h = holder(size=3)
    h.classify_many([("Code", "", "1"), ("Code", "", "2"), ("Code", "", "3")])
    served = h.classify_many([("Code", "", "2"), ("Code", "", "4"), ("Code", "", "1")])
    assert served == [
        Decision("Development", "cache", "Code"),
        Decision("Development", "app", "Code"),
        Decision("Development", "cache", "Code"),
    ]
    assert (h.hits, h.misses) == (2, 4)
    h.classify("Code", "", "5")  # 3 went for 4; now 2, the least recent, goes
    assert [h.peek(("Code", "", n)) is not None for n in "12345"] == [
        True, False, False, True, True,
    ]  # fmt: skip


def test_size_zero_disables_caching() -> None:
    h = holder(size=0)
    h.classify("Code", "", "")
    h.classify("Code", "", "")
    assert (h.hits, h.misses, len(h)) == (0, 2, 0)


def test_remember_stores_an_llm_verdict() -> None:
    h = holder()
    h.classify("Unknown", "", "")
    h.remember(("Unknown", "", ""), Decision("Game", "llm", ""))
    assert h.classify("Unknown", "", "") == Decision("Game", "cache", "")
    assert h.peek(("Unknown", "", "")) == Decision("Game", "llm", "")


def test_swap_replaces_the_classifier_and_clears_the_cache() -> None:
    h = holder()
    h.classify("Code", "", "")
    h.swap(make_classifier({"category": "Design", "appPatterns": ["Code"]}))
    assert len(h) == 0
    assert h.classify("Code", "", "") == Decision("Design", "app", "Code")


def test_classify_many_mixes_hits_and_misses_in_order() -> None:
    h = holder(size=10)
    h.classify("Code", "", "x")
    keys = [("Arc", "https://github.com", ""), ("Code", "", "x"), ("Nope", "", "")]
    assert h.classify_many(keys) == [
        Decision("Development", "domain", "github.com"),
        Decision("Development", "cache", "Code"),
        Decision("Uncategorized", "default", ""),
    ]
    assert (h.hits, h.misses) == (1, 3)


def test_pool_gives_the_same_answers_and_is_rebuilt_on_swap() -> None:
    h = holder(size=100, pool_workers=1, pool_threshold=2)
    try:
        keys = [("Code", "", str(i)) for i in range(5)] + [("Arc", "https://github.com", "")]
        inline = [make_classifier(*DOCS).classify(*k) for k in keys]
        assert h.classify_many(keys) == inline
        h.swap(make_classifier({"category": "Design", "appPatterns": ["Code"]}))
        assert {d.category for d in h.classify_many(keys[:5])} == {"Design"}
    finally:
        h.close()
