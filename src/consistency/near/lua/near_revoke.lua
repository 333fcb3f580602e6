-- Revokes the near leases of replicas that did not acknowledge an invalidation in time.
-- KEYS: the lease set. ARGV: replica ids.
-- Returns the time (ms) until the last of those leases would have run out (0 if none held).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = 0
for i = 1, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s then
    left = math.max(left, tonumber(s) - now)
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return math.ceil(left)
