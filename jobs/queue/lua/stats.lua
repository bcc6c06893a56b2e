-- stats.lua: a consistent O(1) snapshot of one queue's counts.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] processing   KEYS[4] stats
-- KEYS[5] waiting (jobs waiting for their dependencies)
-- Returns {pending, scheduled, processing, stats hash as a flat HGETALL list, waiting,
-- held back}; a stats key that is not a hash (damaged) reads as empty, as the scripts
-- that count treat it. `pending` includes the `held back` jobs: ready, but parked by
-- their type's rate limit or concurrency cap (see _lib.lua); O(number of held-back types).

local counters = redis.pcall('HGETALL', KEYS[4])
if counters.err then
  counters = {}
end
local base = string.sub(KEYS[1], 1, #KEYS[1] - #'pending')
local held = 0
for _, t in ipairs(redis.call('ZRANGE', base .. 'parked', 0, -1)) do
  held = held + redis.call('ZCARD', base .. 'parked:' .. t)
end
return {
  redis.call('ZCARD', KEYS[1]) + held,
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  counters,
  redis.call('ZCARD', KEYS[5]),
  held,
}
