"""Reads of the input stream bounded in bytes, not only in entries.

Redis sends an XREADGROUP's entries whole: COUNT 1000 of 2 MB entries is a 2 GB reply, read
and turned into objects before any check of ours could run. Three parts keep a consumer's
reads within POMOCORE_BATCH_MAX_BYTES however large the entries a producer writes:

1. **COUNT follows the entries' size** (`ReadSizer`). After each read, the bytes of its
   reply per entry (measured by the client's parser, core/connect.py) set the next COUNT
   so that twice that size fills at most what is left of the batch's bytes. Ordinary
   entries (~300 bytes) keep COUNT at POMOCORE_BATCH_SIZE; a stream of 70 KB entries
   reads about 60 at a time.
2. **A reply past the bound is cut off** (core/connect.py `bounded_parser`): the client
   stops reading it at POMOCORE_BATCH_MAX_BYTES and drops the connection. Its entries
   were delivered to this consumer, unread: they are in its pending list.
3. **The guarded read** (`GUARDED_READ`, a script) then takes over: it reads entries one
   at a time on the server and returns in place of one over POMOCORE_MAX_ENTRY_BYTES only
   its size, so such an entry never leaves Redis. The consumer reads its own pending list
   this way (after a cut-off, a reclaim, or at start: the case of a crash loop on a huge
   entry), and new entries too until a guarded read finds none too large. The entries it
   stands in for are dead-lettered as `too_large` (core/events.py) and acknowledged.

The guarded read costs Redis about 15 µs per entry against 1.6 for XREADGROUP (one
XREADGROUP per entry, each converted to Lua values and back; 100,000 entries of the demo
workload: GuardedReader.read against XREADGROUP COUNT 1000, shared 2-core machine), so
it is used only where an oversized entry is known or likely, never on the hot path. One
entry per XREADGROUP keeps what the server holds in Lua to one entry at a time.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from pomocore.consumers.batch import Entry
from pomocore.core.events import MAX_ENTRY_FIELDS, Oversized, entry_bytes
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings

# KEYS[1] stream; ARGV group, consumer, from ('>' for new entries, else an id: this
# consumer's pending entries after it), max_entries, max_entry_bytes, max_fields,
# max_read_bytes (what one call reads on the server, oversized entries included),
# max_kept_bytes (what it returns, counting 16 bytes of framing per value and 64 per
# entry: the reply stays under POMOCORE_BATCH_MAX_BYTES, which cuts off a longer one).
# Returns [[id, [name, value, ...]] | [id, false] (deleted while pending)
#          | [id, bytes, fields] (too large: left on the server), ...].
# One entry per XREADGROUP: a call holds at most max_read_bytes plus one entry in Lua.
GUARDED_READ = """
local group, consumer, from = ARGV[1], ARGV[2], ARGV[3]
local max_entries, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_values, max_read, max_kept = 2 * tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local out, read, kept = {}, 0, 0
while #out < max_entries and read < max_read and kept < max_kept do
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
    'STREAMS', KEYS[1], from)
  if not reply then break end
  local entry = reply[1][2][1]
  if not entry then break end
  if from ~= '>' then from = entry[1] end
  local fields = entry[2]
  if not fields then
    out[#out + 1] = {entry[1], false}
  else
    local n = 0
    for i = 1, #fields do n = n + #fields[i] end
    read = read + n
    if n > max_bytes or #fields > max_values then
      out[#out + 1] = {entry[1], n, math.floor((#fields + 1) / 2)}
    else
      kept = kept + n + 16 * #fields + 64  -- (what the reply carries: RESP framing too)
      out[#out + 1] = entry
    end
  end
end
return out
"""

# Bytes per entry assumed before a read has measured any (the demo's entries take ~300).
FIRST_ENTRY_ESTIMATE_BYTES = 1024


class ReadSizer:
    """The COUNT of a lane's next XREADGROUP, from the bytes per entry of its last read."""

    def __init__(self, settings: Settings) -> None:
        self.budget_bytes = settings.batch_max_bytes
        self.max_entry_bytes = settings.max_entry_bytes
        self.entry_estimate_bytes = FIRST_ENTRY_ESTIMATE_BYTES
        # Set by a cut-off reply; cleared when a guarded read of new entries finds none
        # too large: meanwhile new entries are read guarded too.
        self.guarded = False
        self.cut_offs = 0

    def count(self, want: int, used_bytes: int) -> int:
        """Entries to ask for: twice the estimate per entry fits in the bytes left (0:
        the batch is full by bytes)."""
        left = self.budget_bytes - used_bytes
        return max(0, min(want, left // (2 * self.entry_estimate_bytes)))

    def observe(self, reply_bytes: int, entries: list[Entry]) -> int:
        """A plain read's reply of `reply_bytes` (-1: not measured) held `entries`;
        returns the bytes it counts for."""
        if not entries:
            return max(0, reply_bytes)
        if reply_bytes < 0:  # a client without the bounded parser (tests): count fields
            reply_bytes = sum(entry_bytes(f) for _, f in entries if isinstance(f, dict | list))
        self.entry_estimate_bytes = max(64, reply_bytes // len(entries))
        return reply_bytes

    def cut_off(self) -> None:
        """A reply went past the batch's bytes: read guarded until it is over, then
        start again from entries as large as the limit allows."""
        self.guarded = True
        self.cut_offs += 1
        self.entry_estimate_bytes = self.max_entry_bytes


class GuardedReader:
    """Runs GUARDED_READ for one consumer name."""

    def __init__(
        self, settings: Settings, redis: aioredis.Redis, keys: KeySpace | None = None
    ) -> None:
        self.settings = settings
        self.stream_key = (keys or settings.keys).stream_key
        self._script = redis.register_script(GUARDED_READ)

    async def read(self, from_id: str, max_entries: int) -> list[Entry]:
        """Up to `max_entries` entries after `from_id` ('>': new ones), at most half the
        batch's bytes of them; an oversized one comes as Oversized, not read."""
        s = self.settings
        reply: Any = await self._script(
            keys=[self.stream_key],
            args=[
                s.group, s.consumer_name, from_id, max_entries, s.max_entry_bytes,
                MAX_ENTRY_FIELDS, s.batch_max_bytes, s.batch_max_bytes // 2,
            ],
        )  # fmt: skip
        return [guarded_entry(item) for item in reply or ()]


def guarded_entry(item: list[Any]) -> Entry:
    """One item of GUARDED_READ's reply as an Entry."""
    raw_id = item[0]
    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
    if len(item) >= 3:
        return entry_id, Oversized(int(item[1]), int(item[2]))
    fields = item[1] if len(item) > 1 else None
    return entry_id, fields or None
