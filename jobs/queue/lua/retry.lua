-- retry.lua: put a failed or cancelled job back in the queue with a fresh retry budget
-- (failures and lost leases reset; attempts keep counting every delivery).
--
-- KEYS[1] pending   KEYS[2] failed   KEYS[3] cancelled   KEYS[4] seq   KEYS[5] wake
-- KEYS[6] stats   KEYS[7] this request's record (B..'req:'..request id)   KEYS[8] scheduled
-- ARGV[1] job key prefix   ARGV[2] id   ARGV[3] how long the answer is remembered (ms;
-- 0: not at all, for a bulk retry whose caller does not need the answer repeated)
-- Returns -1 no such job (or its key is not a job record); 0 the job is not failed or
-- cancelled; 1 requeued, behind every job that was due before it (promote_due).
--
-- The job leaves the count of the final state it was in (stats 'failed' or 'cancelled'),
-- so that each job enqueued is counted once: in its live index or in the counter of the
-- final state it last reached (total = completed + failed + cancelled + pending +
-- scheduled + processing, as long as no unfinished job was purged).
--
-- A retry sent again after its reply was lost gives the first one's answer (see
-- cancel.lua): without it, it would answer 0, or requeue a job that failed again since.

local pending, failed, cancelled, seq_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local stats, request = KEYS[6], KEYS[7]
local id = ARGV[2]
local answered = redis.call('HGET', request, 'code')
if answered then
  return tonumber(answered)
end
local job_key = ARGV[1] .. id
local status = field_of(job_key, 'status')
if not status then
  return -1
end
if status ~= 'failed' and status ~= 'cancelled' then
  return 0
end
local now = now_ms()
promote_due(ARGV[1], KEYS[8], pending, seq_key, stats, now, PROMOTE_ON_WRITE)
redis.call('ZREM', failed, id)
redis.call('ZREM', cancelled, id)
-- Not HINCRBY: a damaged counter would abort the script half way (see tally).
local counted = tonumber(field_of(stats, status))
if counted and counted > 0 then
  redis.call('HSET', stats, status, int(counted - 1))
end
redis.call('PERSIST', job_key)
redis.call('HDEL', job_key, 'completed_at', 'lease')
redis.call('HSET', job_key, 'failures', 0, 'lost', 0, 'run_at', now)
make_ready(job_key, id, pending, seq_key)
-- A unique job is live again: it takes its key back, unless another live job took it.
local unique = field_of(job_key, 'unique')
if unique then
  local holder = unique_holder(unique, ARGV[1], now)
  if not holder or holder == id then
    redis.call('SET', unique, id)
  end
end
wake(wake_key)
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', request, 'code', 1)
  redis.call('PEXPIRE', request, tonumber(ARGV[3]))
end
return 1
