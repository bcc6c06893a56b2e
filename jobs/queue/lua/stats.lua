-- stats.lua: a consistent O(1) snapshot of one queue's counts.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] processing   KEYS[4] stats
-- KEYS[5] waiting (jobs waiting for their dependencies)
-- Returns {pending, scheduled, processing, stats hash as a flat HGETALL list, waiting}; a stats
-- key that is not a hash (damaged) reads as empty, as the scripts that count treat it.

local counters = redis.pcall('HGETALL', KEYS[4])
if counters.err then
  counters = {}
end
return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  counters,
  redis.call('ZCARD', KEYS[5]),
}
