-- Reconciliation: raise <field> of each hash to at least the given value (never lower it: Redis may already
-- count usage that has not reached PostgreSQL yet). KEYS[i]; ARGV: field_1, value_1, ttl_ms_1, field_2, ...
for i = 1, #KEYS do
  local field = ARGV[(i - 1) * 3 + 1]
  local value = tonumber(ARGV[(i - 1) * 3 + 2])
  local current = tonumber(redis.call('HGET', KEYS[i], field) or '0')
  if value > current then redis.call('HSET', KEYS[i], field, value) end
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[(i - 1) * 3 + 3])) end
end
return #KEYS
