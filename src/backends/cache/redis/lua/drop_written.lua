-- A bulk write's end after COMMIT: deletes each entry while it is still marked, and clears
-- this write's mark (a concurrent writer's mark on the same key stays until that one ends).
-- KEYS: entry1, mark1, entry2, mark2, ...
for i = 1, #KEYS / 2 do
  if redis.call('DECR', KEYS[2 * i]) <= 0 then
    redis.call('DEL', KEYS[2 * i - 1], KEYS[2 * i])
  else
    redis.call('DEL', KEYS[2 * i - 1])
  end
end
return 1
