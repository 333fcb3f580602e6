-- Marks keys as being written and revokes their readers' leases.
-- KEYS: mark1, lease1, mark2, lease2, ... ARGV: mark ttl (ms).
for i = 1, #KEYS / 2 do
  redis.call('INCR', KEYS[2 * i - 1])
  redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[1])
  redis.call('DEL', KEYS[2 * i])
end
return #KEYS / 2
