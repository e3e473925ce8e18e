-- Acknowledge a batch and apply its effects in one atomic step.
--
-- KEYS[1] input stream, KEYS[2] dead-letter stream, KEYS[3] session-score stream,
-- KEYS[4] set of daily keys whose weekly/monthly keys are derived and stale,
-- KEYS[5..] leaderboard keys (every key the script touches is in KEYS: Cluster-safe).
-- ARGV: group, consumer, mark_derived (1 = add KEYS[5..] to KEYS[4]), n_ids, ids...,
--       n_dead, then per dead letter: n_fields, field, value, ...,
--       n_sessions, then per session: userId, sessionDate, session,
--       then for each KEYS[5..]: n_pairs, member, increment, ...,
--       then for each KEYS[5..]: expire-at unix seconds (0 = keep forever)
--
-- Exactly once: the ids still pending in the group are claimed (XCLAIM JUSTID, which
-- neither counts a delivery nor moves anything else). If some id is no longer pending,
-- another consumer already acknowledged it: nothing is written and the still-pending ids
-- are returned, so the caller commits exactly that subset. Otherwise every id is
-- acknowledged and every effect applied. All arguments are validated before the first
-- write, because a script that fails half-way does not roll back.
-- Returns {1, acked} or {0, still_pending_id, ...}.

local group, consumer = ARGV[1], ARGV[2]
local mark_derived = ARGV[3]
if mark_derived ~= '0' and mark_derived ~= '1' then
  return redis.error_reply('ERR pomocore: bad mark_derived flag')
end
local n_ids = tonumber(ARGV[4])
if not n_ids or n_ids < 1 then return redis.error_reply('ERR pomocore: bad id count') end
local pos = 5
local ids = {}
for i = 1, n_ids do ids[i] = ARGV[pos]; pos = pos + 1 end

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

local increments_at = pos
local to_number = tonumber  -- a local: this loop runs once per (key, user)
for k = 5, #KEYS do
  local n_pairs = to_number(ARGV[pos]); pos = pos + 1
  if not n_pairs then return redis.error_reply('ERR pomocore: bad pair count for ' .. KEYS[k]) end
  for i = pos + 1, pos + 2 * n_pairs - 1, 2 do
    local amount = to_number(ARGV[i])
    -- x - x is 0 for every finite number, NaN for NaN and for +-inf
    if not amount or amount - amount ~= 0 then
      return redis.error_reply('ERR pomocore: bad increment for ' .. KEYS[k])
    end
  end
  pos = pos + 2 * n_pairs
end
local expire_at = pos
for k = 5, #KEYS do
  if not tonumber(ARGV[pos]) then return redis.error_reply('ERR pomocore: bad expire-at for ' .. KEYS[k]) end
  pos = pos + 1
end
if pos ~= #ARGV + 1 then return redis.error_reply('ERR pomocore: argument count mismatch') end

-- (unpack() expands only as the last argument, so build XCLAIM's argument list)
local claim_args = {KEYS[1], group, consumer, 0}
for i = 1, n_ids do claim_args[4 + i] = ids[i] end
claim_args[5 + n_ids] = 'JUSTID'
local claimed = redis.call('XCLAIM', unpack(claim_args))
if #claimed ~= n_ids then
  local out = {0}
  for i = 1, #claimed do out[i + 1] = claimed[i] end
  return out
end

local acked = redis.call('XACK', KEYS[1], group, unpack(ids, 1, n_ids))

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

pos = increments_at
for k = 5, #KEYS do
  local key = KEYS[k]
  local n_pairs = tonumber(ARGV[pos]); pos = pos + 1
  for _ = 1, n_pairs do
    redis.call('ZINCRBY', key, ARGV[pos + 1], ARGV[pos])
    pos = pos + 2
  end
  -- Retention counted from the end of the key's period; the same time on every batch.
  local ts = tonumber(ARGV[expire_at + k - 5])
  if ts > 0 then redis.call('EXPIREAT', key, ts) end
end
-- Derived mode: the refresher rebuilds the weekly/monthly keys of these days. Marked in
-- the same atomic step as the increments, so no committed increment can miss a refresh.
if mark_derived == '1' and #KEYS >= 5 then
  redis.call('SADD', KEYS[4], unpack(KEYS, 5, #KEYS))
end
return {1, acked}
