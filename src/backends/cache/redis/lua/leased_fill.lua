-- Fills after a leased miss: stored only while the lease is the caller's, no write is in
-- flight and no version as new is present; the leases are released (after the SETs).
-- KEYS: entry1, mark1, lease1, ... ARGV: lease, ttl (ms), then per key: version, encoded.
-- Returns 1 (stored) or 0 per key.
local out = {}
local release = {}
for i = 1, #KEYS / 3 do
  local key, mark, lease = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local version, encoded = tonumber(ARGV[2 * i + 1]), ARGV[2 * i + 2]
  local stored = 0
  if redis.call('GET', lease) == ARGV[1] then
    release[#release + 1] = lease
    if not marked(mark) and not holds_as_new(key, version) then
      redis.call('SET', key, encoded, 'PX', ARGV[2])
      stored = 1
    end
  end
  out[i] = stored
end
-- The leases are released after every SET: on a full server (noeviction) the first SET is
-- then the script's first write and is refused; a DEL first would let the SETs through.
for _, lease in ipairs(release) do
  redis.call('DEL', lease)
end
return out
