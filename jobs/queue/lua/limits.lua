-- limits.lua: set or clear job types' flow limits (rate limit, concurrency cap), as a
-- worker pool publishes them at start (its declarations, the queue's overrides applied)
-- or `RedisQueue.set_limits` sets them. A type whose jobs are held back is looked at
-- again by the next fetch, under its new limits.
--
-- KEYS[1] limits (hash)   KEYS[2] parked (zset of held-back types)   KEYS[3] wake
-- ARGV[1..] 2 values per type: job type, 'count period_ms cap' ('0' for no such limit),
--           or '' to clear every limit of the type
-- Returns how many types' limits changed.

local limits, parked, wake_key = KEYS[1], KEYS[2], KEYS[3]
local changed = 0
for b = 1, #ARGV, 2 do
  local t, value = ARGV[b], ARGV[b + 1]
  local current = field_of(limits, t)
  if value == '' and current then
    redis.call('HDEL', limits, t)
  elseif value ~= '' and current ~= value then
    if type(redis.pcall('HSET', limits, t, value)) == 'table' then
      redis.call('DEL', limits)  -- not a hash: damaged; the pools publish theirs again
      redis.call('HSET', limits, t, value)
    end
  end
  if (value == '' and current) or (value ~= '' and current ~= value) then
    changed = changed + 1
    if redis.call('EXISTS', base_of(parked, 'parked') .. 'parked:' .. t) == 1 then
      redis.call('ZADD', parked, 0, t)
      wake(wake_key)
    end
  end
end
return changed
