-- Give back the reservation of a request that was never settled (its web process died), at most once.
-- KEYS[1]: the organisation's holds; KEYS[1 + i]: the hash of reservation i. ARGV[1]: the hold record;
-- ARGV[2i], ARGV[2i + 1]: field prefix and amount of reservation i.
-- Whoever removes the record gives the reservation back: this script or the request's own late settle.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
for i = 2, #KEYS do
  local key = KEYS[i]
  -- A hash past its period has expired: nothing to give back, and nothing to recreate.
  if redis.call('EXISTS', key) == 1 then
    local field = ARGV[2 * (i - 1)] .. '_held'
    local held = redis.call('HINCRBY', key, field, -tonumber(ARGV[2 * (i - 1) + 1]))
    if held < 0 then redis.call('HSET', key, field, 0) end
  end
end
return 1
