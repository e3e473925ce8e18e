"""Deterministic document ids: the same event always maps to the same `_id`.

That makes every MongoDB write idempotent: a redelivered entry hits a duplicate key
(error 11000), which means "already written".
"""

from __future__ import annotations

import hashlib
import struct

from bson import ObjectId

_SEQ_LIMIT = 1 << 24


def categorized_data_id(app: str, url: str, title: str) -> ObjectId:
    """`_id` of the categorized_data document of one (app, url, title)."""
    raw = b"\x1f".join(s.encode("utf-8", "surrogatepass") for s in (app, url, title))
    return ObjectId(hashlib.blake2b(raw, digest_size=12).digest())


def stream_tag(stream_key: str) -> bytes:
    """3 bytes naming the input stream, so two streams' entry ids never collide."""
    return hashlib.blake2b(stream_key.encode(), digest_size=3).digest()


def usage_log_id(tag: bytes, entry_id: str) -> ObjectId:
    """`_id` of the pomodoro_usage_log document of one stream entry.

    Laid out like a MongoDB ObjectId, so ids sort by entry time and `_id.generation_time`
    is the entry's time: 4 bytes seconds, 2 bytes milliseconds, 3 bytes stream tag,
    3 bytes sequence. A sequence beyond 2^24 (never produced by XADD *) falls back to a hash.
    """
    ms_text, _, seq_text = entry_id.partition("-")
    ms, seq = int(ms_text), int(seq_text or 0)
    seconds, millis = divmod(ms, 1000)
    if seq >= _SEQ_LIMIT or seconds >= 1 << 32:
        return ObjectId(hashlib.blake2b(tag + entry_id.encode(), digest_size=12).digest())
    return ObjectId(struct.pack(">IH", seconds, millis) + tag + seq.to_bytes(3, "big"))
