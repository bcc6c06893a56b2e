-- enqueue.lua: add one or many jobs atomically; an id that already exists is left alone.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] stats   KEYS[5] wake
-- ARGV[1] job key prefix (B..'job:')
-- ARGV[2..] 9 values per job: id, type, payload (JSON), priority, max_retries,
--           timeout_ms ('' = none), backoff (JSON spec), metadata (JSON), delay_ms
-- Returns {now_ms, created_1, ..., created_n}: 1 written, 0 the id already existed.
--
-- Record fields written (add_job in _lib.lua): id type payload status priority
-- max_retries timeout_ms backoff metadata created_at run_at score (attempts, failures and
-- lost appear once they are not 0). Later scripts add started_at, completed_at, lease,
-- error, traceback, result, written_by.

local pending, scheduled, seq_key, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_prefix = ARGV[1]
local now = now_ms()
local out = {now}
local created = 0
local n = (#ARGV - 8) / 2
-- One INCRBY for the whole batch keeps FIFO order and saves a call per job.
local seq = redis.call('INCRBY', seq_key, n) - n

local adds = {pending = {}, scheduled = {}}
for b = 9, #ARGV, 2 do
  seq = seq + 1
  if add_job(job_prefix, adds, now, seq, ARGV[b], ARGV[2], ARGV[b + 1], ARGV[3], ARGV[4],
             ARGV[5], ARGV[6], ARGV[7], ARGV[8], true) then
    created = created + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
flush_adds(pending, scheduled, adds, now)

if created > 0 then
  redis.call('HINCRBY', stats, 'total', created)
  -- Also for delayed jobs: an idle pool must learn the new earliest due time.
  wake(wake_key)
end
return out
