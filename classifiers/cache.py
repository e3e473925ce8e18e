"""An LRU of decisions in front of the Classifier, bounded in entries and in bytes.

What a hit returns: the stored decision with `source="cache"`, except that an undecided
decision (`source="default"`) is returned as stored, so the LLM layer still sees it as
undecided. The original source stays reachable through `peek(key)`; `remember` lets the
LLM layer store its verdict (`source="llm"`) over a default.

Bytes: each entry counts its key's strings, its decision's pattern and the bookkeeping
(classifiers/lru.py); the least recently used entries go until both `max_size` and
`max_bytes` hold, so 20,000 keys of three 8,192-character Hangul fields (~1 GB) cannot
be kept under the default 64 MiB.

Concurrency: the consumer is single-threaded asyncio. `swap` replaces the classifier and
the cache by rebinding attributes, so a reader sees the old pair or the new pair.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import compress, repeat
from operator import is_, itemgetter
from typing import Any

from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.lru import ENTRY_OVERHEAD_BYTES, key_bytes
from pomocore.classifiers.pool import DEFAULT_POOL_THRESHOLD, ClassifierPool
from pomocore.core.decision import UNDECIDED_SOURCE, ClassKey, Decision

log = logging.getLogger(__name__)

# (original decision, what a hit returns, bytes counted): the hit view is built once, at
# insert time.
_Entry = tuple[Decision, Decision, int]
_MAX_VIEWS = 4096  # title decisions carry the matched text: bound their variety
# Views are shared only for decisions whose pattern is this short (app and domain patterns,
# short title matches): a regex title rule may match a whole title, and a shared view would
# keep it alive after its entries left. 4,096 views x (64 + 2 x 56) bytes then at most.
_MAX_SHARED_PATTERN_CHARS = 64
_DECISION_BYTES = 56  # a Decision (three slots), and as much for its view
_decision_of = itemgetter(1)  # of an _Entry: (decision as first made, as served)
_NOT_YET: Any = (None, None, 0)  # in place of the entry of a key not cached yet


class CachingClassifier:
    def __init__(
        self,
        classifier: Classifier,
        max_size: int,
        *,
        max_bytes: int = 64 << 20,
        pool_workers: int = 0,
        pool_threshold: int = DEFAULT_POOL_THRESHOLD,
    ) -> None:
        """`pool_workers=0` never uses a process pool; otherwise batches with at least
        `pool_threshold` misses go to the pool (see classifiers/pool.py for why)."""
        self.classifier = classifier
        self.max_size = max_size
        self.max_bytes = max_bytes
        self.bytes = 0  # what the entries count (classifiers/lru.py)
        self.pool_threshold = pool_threshold
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[ClassKey, _Entry] = OrderedDict()
        self._views: dict[Decision, Decision] = {}
        self._pool = ClassifierPool(classifier.pattern_set, pool_workers) if pool_workers else None
        self._current_ids: dict[str, Any] = dict(classifier.category_ids)

    # --- passthroughs the consumer needs ---

    @property
    def category_ids(self) -> Mapping[str, Any]:
        return self.classifier.category_ids

    def current_category_ids(self) -> Mapping[str, Any]:
        """`category_ids`, kept current by `swap` (updated in place): a pattern reload that
        gives a category another `_id` reaches whoever holds it (the MongoDB sinks) at
        once, where the mapping taken at start-up wrote the old id until a restart. A
        plain dict, not a view reading through to the classifier: 60 ns a lookup against
        310, and the sinks look one up per document."""
        return self._current_ids

    @property
    def version(self) -> str:
        return self.classifier.version

    def is_browser(self, app: str) -> bool:
        return self.classifier.is_browser(app)

    def __len__(self) -> int:
        return len(self._cache)

    # --- lookups ---

    def classify(self, app: str, url: str, title: str) -> Decision:
        key = (app, url, title)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        decision = self.classifier.classify(app, url, title)
        self._store(key, decision)
        return decision

    def classify_many(self, keys: Sequence[ClassKey]) -> list[Decision]:
        """Decisions for a batch's distinct keys; misses go inline or to the pool."""
        # The hits in C, without a loop (~0.1 µs a key saved): look every key up, touch
        # the hits in order (LRU), then compute the misses, as a loop over the keys would.
        cache = self._cache
        found = list(map(cache.get, keys))
        missing = list(compress(range(len(keys)), map(is_, found, repeat(None))))
        deque(map(cache.move_to_end, compress(keys, found)), maxlen=0)  # (entries: truthy)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        for i in missing:
            found[i] = _NOT_YET
        out: list[Decision | None] = list(map(_decision_of, found))  # type: ignore[arg-type]
        if missing:
            miss_keys = [keys[i] for i in missing]
            for i, key, decision in zip(missing, miss_keys, self._compute(miss_keys), strict=True):
                self._store(key, decision)
                out[i] = decision
        return out  # type: ignore[return-value]  # every None was filled above

    def _compute(self, keys: list[ClassKey]) -> list[Decision]:
        if self._pool is not None and len(keys) >= self.pool_threshold:
            try:
                return self._pool.classify(keys)
            except Exception:  # a broken pool must not stop the consumer
                log.exception("classifier pool failed; classifying inline")
        classify = self.classifier.classify
        return [classify(a, u, t) for a, u, t in keys]

    def peek(self, key: ClassKey) -> Decision | None:
        """The stored decision with its original source, without touching LRU order."""
        entry = self._cache.get(key)
        return entry[0] if entry is not None else None

    # --- updates ---

    def remember(self, key: ClassKey, decision: Decision) -> None:
        """Store a decision made elsewhere (the LLM's verdict)."""
        self._store(key, decision)

    def swap(self, classifier: Classifier) -> None:
        """Replace the classifier (pattern reload) and drop every cached decision."""
        self.classifier = classifier
        self._cache = OrderedDict()
        self.bytes = 0
        # in place, on the loop thread the sinks build their documents on: never half-seen
        self._current_ids.clear()
        self._current_ids.update(classifier.category_ids)
        if self._pool is not None:
            self._pool.rebuild(classifier.pattern_set)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _store(self, key: ClassKey, decision: Decision) -> None:
        if self.max_size <= 0:
            return
        cost = key_bytes(key) + sys.getsizeof(decision.pattern) + ENTRY_OVERHEAD_BYTES
        cost += 2 * _DECISION_BYTES
        if cost > self.max_bytes:
            return  # (it would evict everything else and still not fit)
        view = self._view(decision)
        cache = self._cache
        old = cache.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        cache[key] = (decision, view, cost)
        self.bytes += cost
        while len(cache) > self.max_size or self.bytes > self.max_bytes:
            self.bytes -= cache.popitem(last=False)[1][2]

    def _view(self, decision: Decision) -> Decision:
        """What a hit returns for `decision`: shared per distinct decision when small."""
        view = self._views.get(decision)
        if view is not None:
            return view
        view = (
            decision
            if decision.source in (UNDECIDED_SOURCE, "cache")
            else replace(decision, source="cache")
        )
        if len(decision.pattern) <= _MAX_SHARED_PATTERN_CHARS:
            if len(self._views) >= _MAX_VIEWS:
                self._views.clear()
            self._views[decision] = view
        return view
