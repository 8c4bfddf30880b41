-- Check and count every limit of one request, atomically: all admitted and counted, or nothing counted.
-- ARGV[1]: request id (concurrency member). ARGV[2]: the request's hold record ('' when it has no "sum" check),
-- ARGV[3]: ms until that record is due for release. Then 5 values per check i (KEYS[i] its counter):
--   kind, limit, cost, a, b
--   kind "rate" (GCRA over a window): a = window ms; cost = requests or tokens. Key: theoretical arrival time (ms).
--   kind "conc" (concurrent requests): a = lease ms (a crashed process's slot frees itself). Key: sorted set.
--   kind "sum"  (day/month quota or budget): a = field prefix ("tok" or "usd"), b = ms until the period ends.
--                Key: hash with <prefix>_used (settled) and <prefix>_held (reserved by requests in flight).
-- KEYS[checks + 1], when there is a hold record: the organisation's holds, a sorted set by due time, so that the
-- holds of a process that died before settling are given back (see release.lua).
-- Reply: {1, remaining_1, reset_ms_1, remaining_2, reset_ms_2, ...} when admitted,
--        {0, index_of_first_violated_check, retry_after_ms (-1: can never pass), room, used, held} when not, where
--        room is what that check could still take now (tokens or money; 0 for request and concurrency checks), and
--        used and held what a day/month check has settled and reserved so far (0 for the other kinds).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local hold = ARGV[2]
local n = (#ARGV - 3) / 5
local plan = {}
local reply = {1}

for i = 1, n do
  local base = 3 + (i - 1) * 5
  local kind = ARGV[base + 1]
  local limit = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local key = KEYS[i]
  if kind == 'rate' then
    local window = tonumber(ARGV[base + 4])
    local interval = window / limit
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local room = math.max(0, math.floor((window - (tat - now)) / interval + 1e-9))
    if cost > limit then return {0, i, -1, room} end
    local new_tat = tat + cost * interval
    local allow_at = new_tat - window
    if allow_at > now then return {0, i, math.ceil(allow_at - now), room} end
    plan[i] = new_tat
    reply[#reply + 1] = math.floor((window - (new_tat - now)) / interval + 1e-9)
    reply[#reply + 1] = math.ceil(new_tat - now)
  elseif kind == 'conc' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local count = redis.call('ZCARD', key)
    if count + 1 > limit then return {0, i, 1000, 0} end
    plan[i] = now + tonumber(ARGV[base + 4])
    reply[#reply + 1] = limit - count - 1
    reply[#reply + 1] = 0
  else
    local prefix = ARGV[base + 4]
    local used = tonumber(redis.call('HGET', key, prefix .. '_used') or '0')
    local held = tonumber(redis.call('HGET', key, prefix .. '_held') or '0')
    local period_left = tonumber(ARGV[base + 5])
    local room = math.max(0, limit - used - held)
    if cost > limit then return {0, i, -1, room, used, held} end
    if used + held + cost > limit then return {0, i, period_left, room, used, held} end
    plan[i] = period_left
    reply[#reply + 1] = limit - used - held - cost
    reply[#reply + 1] = period_left
  end
end

for i = 1, n do
  local base = 3 + (i - 1) * 5
  local kind = ARGV[base + 1]
  local key = KEYS[i]
  if kind == 'rate' then
    redis.call('SET', key, string.format('%.3f', plan[i]), 'PX', math.ceil(plan[i] - now) + 1000)
  elseif kind == 'conc' then
    redis.call('ZADD', key, plan[i], member)
    redis.call('PEXPIRE', key, tonumber(ARGV[base + 4]) + 1000)
  else
    local prefix = ARGV[base + 4]
    redis.call('HINCRBY', key, prefix .. '_held', tonumber(ARGV[base + 3]))
    -- Kept a day past the period's end, so that late settles and reconciliation still find it.
    redis.call('PEXPIRE', key, plan[i] + 86400000)
  end
end
if hold ~= '' then
  local due_in = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[n + 1], now + due_in, hold)
  -- Outlives its newest record by a day: a sweep that was down for a while still finds every record.
  redis.call('PEXPIRE', KEYS[n + 1], due_in + 86400000)
end
return reply
