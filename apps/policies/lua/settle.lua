-- Replace one request's reservations with its actual usage and free its concurrency slot, atomically.
-- ARGV[1]: request id. ARGV[2]: its hold record ('' when it has none). Then 4 values per operation i (KEYS[i] its
-- counter, as admitted):
--   kind, reserved, actual, a
--   "rate": a token rate; a = ms per token: give back (reserved - actual) tokens of the window.
--   "conc": remove the request from the set (reserved, actual unused).
--   "sum":  a = field prefix: <prefix>_held -= reserved (never below 0: the counters may have been lost and
--           rebuilt meanwhile), <prefix>_used += actual.
-- KEYS[operations + 1], with a hold record: the organisation's holds. The reservation is given back only when
-- the record is still there: once release.lua gave it back (the request outlived its deadline), only the usage
-- is added, so a reservation is never given back twice.
local member = ARGV[1]
local hold = ARGV[2]
local n = (#ARGV - 2) / 4
local holding = true
if hold ~= '' then holding = redis.call('ZREM', KEYS[n + 1], hold) == 1 end
for i = 1, n do
  local base = 2 + (i - 1) * 4
  local kind = ARGV[base + 1]
  local reserved = tonumber(ARGV[base + 2])
  local actual = tonumber(ARGV[base + 3])
  local key = KEYS[i]
  if kind == 'rate' then
    local tat = redis.call('GET', key)
    if tat then
      local new_tat = tonumber(tat) - (reserved - actual) * tonumber(ARGV[base + 4])
      redis.call('SET', key, string.format('%.3f', new_tat), 'KEEPTTL')
    end
  elseif kind == 'conc' then
    redis.call('ZREM', key, member)
  else
    local prefix = ARGV[base + 4]
    if holding then
      local held = redis.call('HINCRBY', key, prefix .. '_held', -reserved)
      if held < 0 then redis.call('HSET', key, prefix .. '_held', 0) end
    end
    redis.call('HINCRBY', key, prefix .. '_used', actual)
    if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, 3024000000) end
  end
end
return 1
