"""LRU maps of (app, url, title) keys bounded in bytes as well as in entries.

A key's texts may each be POMOCORE_MAX_TEXT_CHARS (8,192) characters: three Hangul fields
take 49 KB as Python strings, so 20,000 such keys are ~1 GB where 20,000 ordinary ones
take 10 MB. Counting entries alone bounds nothing; these maps count the bytes of what
they keep (`sys.getsizeof` of the strings, plus the bookkeeping per entry measured with
tracemalloc, tests/classifiers/test_lru.py) and evict the least recently used entries
until both bounds hold.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from pomocore.core.decision import ClassKey

V = TypeVar("V")

# What one entry of an OrderedDict keyed by a 3-tuple costs beyond the key's strings: the
# tuple (64 bytes), the dict's slot and the order's node, the value's own tuple or object.
# tracemalloc measured 436 bytes per entry of a KeyLRU of 2,000 short keys, 199 of them
# their strings: 237 of bookkeeping; rounded up for the dict's growth steps.
# tests/classifiers/test_lru.py checks that what the maps count is never under the memory
# they hold.
ENTRY_OVERHEAD_BYTES = 320


def key_bytes(key: ClassKey) -> int:
    """The memory a key's three strings take (their characters at 1, 2 or 4 bytes each,
    as CPython stores them, plus each string's header)."""
    app, url, title = key
    return sys.getsizeof(app) + sys.getsizeof(url) + sys.getsizeof(title)


class KeyLRU(Generic[V]):
    """An LRU of ClassKey -> V, bounded to `max_entries` and `max_bytes` (the keys, plus
    `value_bytes(value)`, plus ENTRY_OVERHEAD_BYTES per entry). 0 for either keeps nothing."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        value_bytes: Callable[[V], int] = lambda _: 0,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._value_bytes = value_bytes
        self._items: OrderedDict[ClassKey, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: ClassKey) -> bool:
        return key in self._items

    def get(self, key: ClassKey) -> V | None:
        """The value, now most recently used; None when absent."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: ClassKey, value: V) -> None:
        cost = key_bytes(key) + self._value_bytes(value) + ENTRY_OVERHEAD_BYTES
        if cost > self.max_bytes or self.max_entries <= 0:
            return  # (it would evict everything else and still not fit)
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, cost)
        self.bytes += cost
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, freed) = self._items.popitem(last=False)
            self.bytes -= freed
