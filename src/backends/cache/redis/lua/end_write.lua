-- Clears marks and stores committed entries unless a version at least as new is there.
-- KEYS: entry1, mark1, entry2, mark2, ... ARGV: ttl (ms), then per key: mode (`c` committed,
-- `a` aborted), version, encoded entry.
local ttl = ARGV[1]
for i = 1, #KEYS / 2 do
  local key, mark = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 2 + 3 * (i - 1)
  if redis.call('DECR', mark) <= 0 then redis.call('DEL', mark) end
  if ARGV[a] == 'c' and not holds_as_new(key, tonumber(ARGV[a + 1])) then
    redis.call('SET', key, ARGV[a + 2], 'PX', ttl)
  end
end
return 1
