-- Raises counters to at least the given values, never lowering one (a total that arrives
-- late, after a larger one, changes nothing). KEYS: counters. ARGV: their values.
for i = 1, #KEYS do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tonumber(ARGV[i]) > cur then
    redis.call('SET', KEYS[i], ARGV[i])
  end
end
return #KEYS
