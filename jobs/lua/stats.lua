-- stats.lua: a consistent O(1) snapshot of one queue's counts.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] processing   KEYS[4] stats
-- Returns {pending, scheduled, processing, stats hash as a flat HGETALL list}

return {
  redis.call('ZCARD', KEYS[1]),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('HGETALL', KEYS[4]),
}
