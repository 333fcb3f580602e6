-- Renews (or, with ARGV[3] = '1', takes) a replica's near lease.
-- KEYS: the lease set (a sorted set of replica ids by expiry, in ms of the server's clock).
-- ARGV: replica id, lease ttl (ms), '1' to join.
-- Returns 1, or 0 when the replica is not a holder (its lease ran out or was revoked) and
-- did not ask to join: it must empty its near cache and join again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
epoch(KEYS[1], now, tonumber(ARGV[2]))
if ARGV[3] ~= '1' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
return 1
