-- Publishes a write's invalidation and returns, atomically with it, the replicas that hold
-- a near lease: a replica that joins later has emptied its near cache and reads the cache
-- tier after this point.
-- KEYS: the lease set. ARGV: channel, message, lease ttl (ms).
-- Returns: the server's time (ms), the grace left after a lost lease set (ms, see
-- `epoch.lua`), then each holder's id and expiry (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = epoch(KEYS[1], now, tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[1], ARGV[2])
local held = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = { now, math.ceil(grace) }
for i = 1, #held, 2 do
  if string.sub(held[i], 1, 1) ~= '~' then
    out[#out + 1] = held[i]
    out[#out + 1] = held[i + 1]
  end
end
return out
