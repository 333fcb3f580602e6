-- Publishes a write's invalidation and returns, atomically with it, the replicas that hold
-- a near lease: a replica that joins later has emptied its near cache and reads the cache
-- tier after this point.
-- KEYS: the lease set. ARGV: channel, message.
-- Returns: the server's time (ms), then each holder's id and expiry (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PUBLISH', ARGV[1], ARGV[2])
local held = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
table.insert(held, 1, now)
return held
