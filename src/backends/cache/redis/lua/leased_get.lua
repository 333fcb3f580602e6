-- Reads entries; every unmarked miss gets the caller's lease.
-- KEYS: entry1, mark1, lease1, entry2, ... ARGV: lease, lease ttl (ms).
-- Returns per key the entry, or false (nil) for a miss or a marked key.
local out = {}
for i = 1, #KEYS / 3 do
  local key, mark, lease = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if marked(mark) then
    out[i] = false
  else
    local cur = redis.call('GET', key)
    if cur then
      out[i] = cur
    else
      redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
      out[i] = false
    end
  end
end
return out
