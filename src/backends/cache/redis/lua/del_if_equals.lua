-- Compare-and-delete (releases a lock its owner holds). KEYS: key. ARGV: expected value.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
