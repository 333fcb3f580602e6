-- Prepended to `near_publish.lua` when a write's marks and its near-cache invalidation go in
-- one call (one Redis server, no replicas to wait for): `begin_write.lua`'s marks, over the
-- keys after the lease set. Atomic with the publication that follows, as the two calls are
-- in that order.
-- KEYS: the lease set, then mark1, lease1, mark2, lease2, ... ARGV: (near_publish's three),
-- mark ttl (ms).
for i = 1, (#KEYS - 1) / 2 do
  redis.call('INCR', KEYS[2 * i])
  redis.call('PEXPIRE', KEYS[2 * i], ARGV[4])
  redis.call('DEL', KEYS[2 * i + 1])
end
