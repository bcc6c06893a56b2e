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
-- (fetch sets it aside once it is due).

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
return #entries / 2
