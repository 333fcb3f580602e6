-- Stores an owner's values, each the most recently used in turn, then evicts the owner's
-- least recently used keys beyond the capacity. The access clock is the index's highest
-- score plus one, so the order is exact (no two accesses share a score).
-- KEYS: the owner's index (sorted set: key -> access clock). ARGV: the prefix of the owner's
-- value keys, the capacity, then key, value, key, value, ...
-- The value keys are built here from the prefix: they share the index's hash slot (the
-- owner is the hash tag on a cluster). Returns how many keys were evicted.
local index, prefix, capacity = KEYS[1], ARGV[1], tonumber(ARGV[2])
local top = redis.call('ZREVRANGE', index, 0, 0, 'WITHSCORES')
local clock = 0
if top[2] then clock = tonumber(top[2]) end
for i = 3, #ARGV, 2 do
  clock = clock + 1
  redis.call('SET', prefix .. ARGV[i], ARGV[i + 1])
  redis.call('ZADD', index, clock, ARGV[i])
end
local extra = redis.call('ZCARD', index) - capacity
if extra <= 0 then return 0 end
local victims = redis.call('ZRANGE', index, 0, extra - 1)
for _, k in ipairs(victims) do
  redis.call('DEL', prefix .. k)
end
redis.call('ZREMRANGEBYRANK', index, 0, extra - 1)
return #victims
