-- Ends a write: clears its mark of each key and stores each committed entry unless a version
-- at least as new is there; a dropped entry (a bulk write's, a collection version, a failed
-- commit's) is deleted while still marked, before its mark goes (a concurrent writer's mark
-- on the same key stays until that one ends). Then, when given, publishes the write's
-- change event: after the entries it names are stored.
-- KEYS: entry1, mark1, entry2, mark2, ... ARGV: ttl (ms), then per key: mode (`c` committed,
-- `a` aborted, `d` dropped), version, encoded entry; then, optionally, a channel and a message.
local ttl = ARGV[1]
for i = 1, #KEYS / 2 do
  local key, mark = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 2 + 3 * (i - 1)
  if ARGV[a] == 'd' then redis.call('DEL', key) end
  if redis.call('DECR', mark) <= 0 then redis.call('DEL', mark) end
  if ARGV[a] == 'c' and not holds_as_new(key, tonumber(ARGV[a + 1])) then
    redis.call('SET', key, ARGV[a + 2], 'PX', ttl)
  end
end
local n = 1 + 3 * (#KEYS / 2)
if #ARGV >= n + 2 then redis.call('PUBLISH', ARGV[n + 1], ARGV[n + 2]) end
return 1
