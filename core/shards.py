"""User-partitioned shards (POMOCORE_SHARDS, docs/operations.md "Scaling past one node").

With N > 1 shards, each shard owns its input stream, group, dead letters, session scores
and leaderboard keys, all under one hash tag, so each shard's commit stays one atomic
script on one Redis Cluster node. An event's shard is a stable hash of its `userId`: a
user's whole score for a period lives in exactly one shard, and reads over the shards
stay exact (shell/reader.py merges them).

Pure functions, no I/O: producers in other languages compute the same (docs/contract.md).
"""

from __future__ import annotations

import functools
import itertools
import zlib
from binascii import crc_hqx

from pomocore.core.errors import ConfigError

CLUSTER_SLOTS = 16384
MAX_SHARDS = 256
SHARD_TAG_BASE = "shard"


def shard_of(user_id: str, shards: int) -> int:
    """The shard of a user: CRC-32 (IEEE 802.3, as zlib, Go's hash/crc32, Java's CRC32)
    of the UTF-8 bytes of `userId`, modulo the number of shards."""
    if shards == 1:
        return 0
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % shards


def shard_of_field(user_id: bytes | None, shards: int) -> int:
    """The shard of a stream entry by its raw `userId` field: `shard_of` of the text. An
    entry without one, or whose value is not UTF-8, goes to shard 0, whose consumer
    dead-letters it (missing_field, invalid_utf8) as it would any such entry."""
    if shards == 1 or not user_id:
        return 0
    try:
        text = user_id.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return shard_of(text, shards)


def key_slot(tag: str) -> int:
    """The Redis Cluster slot of a hash tag (CRC16-XMODEM mod 16384, the cluster spec)."""
    return crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


def shard_slot_range(shard: int, shards: int) -> tuple[int, int]:
    """The slots [lo, hi) shard `shard` of `shards` sits in: the slot space cut in equal
    parts, as `redis-cli --cluster create` cuts it between masters."""
    return shard * CLUSTER_SLOTS // shards, (shard + 1) * CLUSTER_SLOTS // shards


@functools.cache
def shard_tag(shard: int, shards: int, base: str = SHARD_TAG_BASE) -> str:
    """The hash tag of one shard's keys: `{base}:{shard}:{j}` with the smallest j whose
    slot lies in the middle half of the shard's part of the slot space.

    Naive tags (`{0}` … `{5}`) hash to arbitrary slots, so three nodes can hold four,
    two and no shards. These spread evenly: with M masters cut as `--cluster create` cuts
    them and N a multiple of M, every node holds N / M shards, and a shard sits a quarter
    of its part away from a boundary, so nodes' ranges moved by a few slots keep it
    (docs/operations.md, "Scaling past one node")."""
    if not 0 <= shard < shards <= MAX_SHARDS:
        raise ValueError(f"shard {shard} of {shards}")
    lo, hi = shard_slot_range(shard, shards)
    quarter = (hi - lo) // 4
    want_lo, want_hi = lo + quarter, max(hi - quarter, lo + quarter + 1)
    for j in itertools.count():
        tag = f"{base}:{shard}:{j}"
        if want_lo <= key_slot(tag) < want_hi:
            return tag
    raise AssertionError("unreachable")  # itertools.count() never ends


def parse_shard_list(text: str, shards: int, setting: str) -> tuple[int, ...]:
    """`0-2,5` → (0, 1, 2, 5); empty → every shard. Raises ConfigError naming `setting`."""
    if not text.strip():
        return tuple(range(shards))
    chosen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        first, _, last = part.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise ConfigError(setting, f"expected shard numbers like 0-2,5, got {part!r}") from None
        if not 0 <= lo <= hi < shards:
            raise ConfigError(
                setting, f"{part!r} is outside the shards 0-{shards - 1} (POMOCORE_SHARDS)"
            )
        chosen.update(range(lo, hi + 1))
    return tuple(sorted(chosen))
