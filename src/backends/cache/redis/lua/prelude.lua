-- Prepended to every script of the write-through protocol.

-- Whether a write is in flight on the key whose mark is `mark`.
local function marked(mark)
  local m = tonumber(redis.call('GET', mark))
  return m ~= nil and m > 0
end

-- Whether `key` holds an entry ("<version>|<payload>") of `version` or newer.
local function holds_as_new(key, version)
  local cur = redis.call('GET', key)
  if not cur then return false end
  local sep = string.find(cur, '|', 1, true)
  if not sep then return false end
  local v = tonumber(string.sub(cur, 1, sep - 1))
  return v ~= nil and v >= version
end
