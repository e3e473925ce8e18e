-- Acknowledge a batch and apply its effects in one atomic step.
--
-- KEYS[1] input stream, KEYS[2] dead-letter stream, KEYS[3] session-score stream,
-- KEYS[4] set of daily keys whose weekly/monthly keys are derived and stale,
-- KEYS[5..] leaderboard keys (every key the script touches is in KEYS: Cluster-safe).
-- ARGV: group, mark_derived (1 = add KEYS[5..] to KEYS[4]),
--       n_segments, then per segment: consumer, n_ids, ids... (one segment per lane whose
--       batch is in this call: a group commit merges the lanes' batches of a process),
--       n_dead, then per dead letter: n_fields, field, value, ...,
--       n_sessions, then per session: userId, sessionDate, session,
--       n_blocks, then per block: n_keys, n_pairs, member, increment, ... (the block's
--       keys are the next n_keys of KEYS[5..]; each pair goes to each of them),
--       then for each KEYS[5..]: expire-at unix seconds (0 = keep forever)
--
-- Exactly once: every id is acknowledged one by one (XACK says whether it was still
-- pending). If some id was not, another consumer already acknowledged it: the ids
-- acknowledged here are put back in their segment consumer's pending list, nothing else
-- is written, and the still-pending ids are returned, so the callers commit exactly that
-- subset. Otherwise every effect is applied. All arguments, and the type of every key the
-- call writes, are checked before the first write, because a script that fails half-way
-- does not roll back: after the XACKs, nothing can fail.
-- Returns {1, acked} or {0, still_pending_id, ...}; a key of the wrong type is the error
-- 'POMOCORE_WRONGTYPE <actual type> <expected type> <key>' (sinks/commit.py WrongKeyType).

local group = ARGV[1]
local mark_derived = ARGV[2]
if mark_derived ~= '0' and mark_derived ~= '1' then
  return redis.error_reply('ERR pomocore: bad mark_derived flag')
end
local n_segments = tonumber(ARGV[3])
if not n_segments or n_segments < 1 or n_segments % 1 ~= 0 then
  return redis.error_reply('ERR pomocore: bad segment count')
end
local pos = 4
local ids, n_ids, find = {}, 0, string.find
local segments = {}  -- {consumer, index of its first id, index of its last id}
for seg = 1, n_segments do
  local consumer, n = ARGV[pos], tonumber(ARGV[pos + 1])
  if not consumer or not n or n < 1 or n % 1 ~= 0 then
    return redis.error_reply('ERR pomocore: bad id count')
  end
  pos = pos + 2
  segments[seg] = {consumer, n_ids + 1, n_ids + n}
  for _ = 1, n do
    local id = ARGV[pos]
    -- XACK stops the script at a malformed id, after acknowledging the ids before it
    if not id or not find(id, '^%d+%-%d+$') then
      return redis.error_reply('ERR pomocore: bad entry id')
    end
    n_ids = n_ids + 1
    ids[n_ids] = id
    pos = pos + 1
  end
end

local dead_at = pos
local n_dead = tonumber(ARGV[pos]); pos = pos + 1
if not n_dead then return redis.error_reply('ERR pomocore: bad dead-letter count') end
for _ = 1, n_dead do
  local n_fields = tonumber(ARGV[pos])
  if not n_fields or n_fields < 2 or n_fields % 2 == 1 then
    return redis.error_reply('ERR pomocore: bad dead-letter field count')
  end
  pos = pos + 1 + n_fields
end

local sessions_at = pos
local n_sessions = tonumber(ARGV[pos]); pos = pos + 1
if not n_sessions then return redis.error_reply('ERR pomocore: bad session count') end
pos = pos + 3 * n_sessions

local blocks_at = pos
local to_number = tonumber  -- a local: this loop runs once per (block, user)
local n_blocks = to_number(ARGV[pos]); pos = pos + 1
if not n_blocks or n_blocks < 0 or n_blocks % 1 ~= 0 then
  return redis.error_reply('ERR pomocore: bad block count')
end
local n_block_keys = 0
for _ = 1, n_blocks do
  local n_keys, n_pairs = to_number(ARGV[pos]), to_number(ARGV[pos + 1])
  if not n_keys or n_keys < 1 or n_keys % 1 ~= 0 or not n_pairs or n_pairs < 0 or n_pairs % 1 ~= 0 then
    return redis.error_reply('ERR pomocore: bad block size')
  end
  n_block_keys = n_block_keys + n_keys
  pos = pos + 2
  for i = pos + 1, pos + 2 * n_pairs - 1, 2 do
    local amount = to_number(ARGV[i])
    -- x - x is 0 for every finite number, NaN for NaN and for +-inf
    if not amount or amount - amount ~= 0 then
      return redis.error_reply('ERR pomocore: bad increment for ' .. ARGV[i - 1])
    end
  end
  pos = pos + 2 * n_pairs
end
if n_block_keys ~= #KEYS - 4 then return redis.error_reply('ERR pomocore: block keys mismatch') end
local expire_at = pos
for k = 5, #KEYS do
  if not tonumber(ARGV[pos]) then return redis.error_reply('ERR pomocore: bad expire-at for ' .. KEYS[k]) end
  pos = pos + 1
end
if pos ~= #ARGV + 1 then return redis.error_reply('ERR pomocore: argument count mismatch') end

-- Key types, before the first write: a write to a key of another type fails (WRONGTYPE)
-- and would leave the XACKs and the writes before it in place. One TYPE per key the call
-- writes (its keys are distinct): on a 1,000-event batch with 145 keys, 0.12 µs per event,
-- about 2 % of the script (python -m benchmarks.commit_script_cost, "+ validation").
local function wrong_type(key, expected)
  local actual = redis.call('TYPE', key)['ok']
  if actual ~= expected and actual ~= 'none' then
    return redis.error_reply('POMOCORE_WRONGTYPE ' .. actual .. ' ' .. expected .. ' ' .. key)
  end
end
local refused = wrong_type(KEYS[1], 'stream')
  or (n_dead > 0 and wrong_type(KEYS[2], 'stream'))
  or (n_sessions > 0 and wrong_type(KEYS[3], 'stream'))
  or (mark_derived == '1' and #KEYS >= 5 and wrong_type(KEYS[4], 'set'))
if refused then return refused end
for k = 5, #KEYS do
  refused = wrong_type(KEYS[k], 'zset')
  if refused then return refused end
end

-- unpack() puts its results on Lua's C stack (8,000 slots): commands that take a list
-- of ids or keys take it in chunks of this many.
local CHUNK = 1000
local min = math.min

-- The fence: XACK one id at a time, so each reply says whether that id was still pending.
-- (One XCLAIM JUSTID over the batch, then one XACK, cost Redis about 1.7x as much:
-- benchmarks/README.md.) The common case is every id pending.
local stream, xack_one = KEYS[1], redis.call
local was_pending, acked = {}, 0
for i = 1, n_ids do
  if xack_one('XACK', stream, group, ids[i]) == 1 then
    acked = acked + 1
    was_pending[i] = true
  end
end
if acked ~= n_ids then
  -- Another consumer acknowledged some id first. Undo: put the ids acknowledged above back
  -- in their consumer's pending list (XCLAIM FORCE recreates an entry of the stream),
  -- write nothing, and return them so the callers commit exactly that subset.
  local out = {0}
  for seg = 1, n_segments do
    local consumer, first, last = segments[seg][1], segments[seg][2], segments[seg][3]
    local back = {}
    for i = first, last do
      if was_pending[i] then
        back[#back + 1] = ids[i]
        out[#out + 1] = ids[i]
      end
    end
    for c = 1, #back, CHUNK do
      local claim_args = {stream, group, consumer, 0, unpack(back, c, min(c + CHUNK - 1, #back))}
      claim_args[#claim_args + 1] = 'FORCE'
      claim_args[#claim_args + 1] = 'JUSTID'
      redis.call('XCLAIM', unpack(claim_args))
    end
  end
  if acked == 0 then
    -- XACK answers 0 for a missing group too: let XCLAIM raise NOGROUP in that case (on an
    -- id that is not pending it changes nothing).
    redis.call('XCLAIM', stream, group, segments[1][1], 0, ids[1], 'JUSTID')
  end
  return out
end

pos = dead_at + 1
for _ = 1, n_dead do
  local n_fields = tonumber(ARGV[pos])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, pos + 1, pos + n_fields))
  pos = pos + 1 + n_fields
end

pos = sessions_at + 1
for _ = 1, n_sessions do
  redis.call('XADD', KEYS[3], '*', 'userId', ARGV[pos], 'sessionDate', ARGV[pos + 1],
    'session', ARGV[pos + 2])
  pos = pos + 3
end

pos = blocks_at + 1
local first = 5
for _ = 1, n_blocks do
  local last, n_pairs = first + tonumber(ARGV[pos]) - 1, tonumber(ARGV[pos + 1])
  pos = pos + 2
  for i = pos, pos + 2 * n_pairs - 1, 2 do
    local member, amount = ARGV[i], ARGV[i + 1]
    for k = first, last do redis.call('ZINCRBY', KEYS[k], amount, member) end
  end
  pos = pos + 2 * n_pairs
  first = last + 1
end
-- Retention counted from the end of the key's period; the same time on every batch.
for k = 5, #KEYS do
  local ts = tonumber(ARGV[expire_at + k - 5])
  if ts > 0 then redis.call('EXPIREAT', KEYS[k], ts) end
end
-- Derived mode: the refresher rebuilds the weekly/monthly keys of these days. Marked in
-- the same atomic step as the increments, so no committed increment can miss a refresh.
if mark_derived == '1' then
  for k = 5, #KEYS, CHUNK do
    redis.call('SADD', KEYS[4], unpack(KEYS, k, min(k + CHUNK - 1, #KEYS)))
  end
end
return {1, acked}
