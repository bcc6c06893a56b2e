-- retry.lua: put a failed or cancelled job back in the queue with a fresh retry budget
-- (failures and lost leases reset; attempts keep counting every delivery).
--
-- KEYS[1] pending   KEYS[2] failed   KEYS[3] cancelled   KEYS[4] seq   KEYS[5] wake
-- KEYS[6] stats   KEYS[7] scheduled
-- ARGV[1] job key prefix   ARGV[2] id
-- Returns -1 no such job (or its key is not a job record); 0 the job is not failed or
-- cancelled; 1 requeued, behind every job that was due before it (promote_due).

local pending, failed, cancelled, seq_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[2]
local job_key = ARGV[1] .. id
local status = field_of(job_key, 'status')
if not status then
  return -1
end
if status ~= 'failed' and status ~= 'cancelled' then
  return 0
end
local now = now_ms()
promote_due(ARGV[1], KEYS[7], pending, seq_key, KEYS[6], now, PROMOTE_ON_WRITE)
redis.call('ZREM', failed, id)
redis.call('ZREM', cancelled, id)
redis.call('PERSIST', job_key)
redis.call('HDEL', job_key, 'completed_at', 'lease')
redis.call('HSET', job_key, 'failures', 0, 'lost', 0, 'run_at', now)
make_ready(job_key, id, pending, seq_key)
wake(wake_key)
return 1
