-- Prepended to the lease scripts. The lease set keeps a member `~epoch` (score +inf) from
-- its first use on. Without it the set was lost (Redis restarted empty, failed over, was
-- flushed) or is new: a holder may still serve its near copies until its lease runs out by
-- its own clock, and no writer can know it holds one. `~grace` then records, by the server's
-- clock, when every lease granted before the loss has run out; writers wait until then
-- before acknowledging. Returns the milliseconds of grace left.
local function epoch(set, now, ttl)
  if not redis.call('ZSCORE', set, '~epoch') then
    redis.call('ZADD', set, '+inf', '~epoch', now + ttl, '~grace')
  end
  local g = tonumber(redis.call('ZSCORE', set, '~grace'))
  if g and g > now then return g - now end
  return 0
end
