-- INCR, setting the expiry when the key is new (or has somehow lost it).
-- KEYS: counter. ARGV: ttl (ms).
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
