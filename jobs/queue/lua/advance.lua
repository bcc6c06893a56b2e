-- advance.lua: move every scheduled job of a queue earlier by ARGV[2] ms, as if the clock
-- had moved that far ahead. Only `jobs.testing` calls it: a test runs delayed jobs and
-- retry backoffs at once, on a clock it controls, without sleeping.
--
-- KEYS[1] scheduled
-- ARGV[1] job key prefix   ARGV[2] how far to move (ms, >= 0)
-- Returns how many scheduled jobs moved.
--
-- Both the index score and the record's run_at move, so the job reads as due when its
-- delay, on the moved clock, is over; an id whose key is not a record is left as is
-- (fetch sets it aside once it is due). Rate limits' clocks (the 'rate' hash) and the
-- held-back types' next looks (the 'parked' zset, see _lib.lua) move as well, so a rate
-- limit lets the next job start when its time comes on the moved clock.

local scheduled = KEYS[1]
local job_prefix, by = ARGV[1], tonumber(ARGV[2])
local entries = redis.call('ZRANGE', scheduled, 0, -1, 'WITHSCORES')
local moved = {}
for i = 1, #entries, 2 do
  local id = entries[i]
  moved[#moved + 1] = int(tonumber(entries[i + 1]) - by)
  moved[#moved + 1] = id
  local job_key = job_prefix .. id
  local run_at = tonumber(field_of(job_key, 'run_at'))
  if run_at then
    redis.call('HSET', job_key, 'run_at', int(run_at - by))
  end
  if #moved >= 1000 then
    redis.call('ZADD', scheduled, unpack(moved))
    moved = {}
  end
end
if #moved > 0 then
  redis.call('ZADD', scheduled, unpack(moved))
end
local base = base_of(job_prefix, 'job:')
local rates = redis.pcall('HGETALL', base .. 'rate')
if type(rates) == 'table' and not rates.err then
  for i = 1, #rates, 2 do
    local tat = tonumber(rates[i + 1])
    if tat then
      redis.call('HSET', base .. 'rate', rates[i], string.format('%.3f', tat - by))
    end
  end
end
local parked = redis.call('ZRANGE', base .. 'parked', 0, -1, 'WITHSCORES')
for i = 1, #parked, 2 do
  redis.call('ZADD', base .. 'parked', int(tonumber(parked[i + 1]) - by), parked[i])
end
return #entries / 2
