-- Reads an owner's value and makes it the owner's most recently used key.
-- KEYS: the owner's index (sorted set: key -> access clock), the value. ARGV: the key.
-- A value that is gone (evicted by an allkeys-lru server) leaves the index.
local v = redis.call('GET', KEYS[2])
if v then
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local clock = 1
  if top[2] then clock = tonumber(top[2]) + 1 end
  redis.call('ZADD', KEYS[1], clock, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return v
