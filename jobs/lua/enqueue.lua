-- enqueue.lua: add one or many jobs atomically; an id that already exists is left alone
-- (so a deterministic id, as the scheduler uses, enqueues at most once).
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] stats   KEYS[5] wake
-- ARGV[1] job key prefix (B..'job:')
-- ARGV[2..] 9 values per job: id, type, payload (JSON), priority, max_retries,
--           timeout_ms ('' = none), backoff (JSON spec), metadata (JSON), delay_ms
-- Returns {now_ms, created_1, ..., created_n}: 1 written, 0 the id already existed.
--
-- Record fields written: id type payload status priority max_retries timeout_ms backoff
-- metadata created_at run_at attempts failures lost score. Later scripts add started_at,
-- completed_at, lease, error, traceback, result.

local pending, scheduled, seq_key, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_prefix = ARGV[1]
local now = now_ms()
local out = {now}
local created = 0
local n = (#ARGV - 1) / 9
-- One INCRBY for the whole batch keeps FIFO order and saves a call per job.
local seq = redis.call('INCRBY', seq_key, n) - n

for i = 0, n - 1 do
  local b = 2 + i * 9
  local id, priority, delay = ARGV[b], ARGV[b + 3], tonumber(ARGV[b + 8])
  local job_key = job_prefix .. id
  if redis.call('EXISTS', job_key) == 1 then
    out[#out + 1] = 0
  else
    seq = seq + 1
    local score = int(ready_score(priority, seq))
    local status, run_at = 'pending', now
    if delay > 0 then
      status, run_at = 'scheduled', now + delay
      redis.call('ZADD', scheduled, run_at, id)
    else
      redis.call('ZADD', pending, score, id)
    end
    redis.call('HSET', job_key,
      'id', id, 'type', ARGV[b + 1], 'payload', ARGV[b + 2], 'status', status,
      'priority', priority, 'max_retries', ARGV[b + 4], 'timeout_ms', ARGV[b + 5],
      'backoff', ARGV[b + 6], 'metadata', ARGV[b + 7], 'created_at', now,
      'run_at', run_at, 'attempts', 0, 'failures', 0, 'lost', 0, 'score', score)
    created = created + 1
    out[#out + 1] = 1
  end
end

if created > 0 then
  redis.call('HINCRBY', stats, 'total', created)
  -- Also for delayed jobs: an idle pool must learn the new earliest due time.
  wake(wake_key)
end
return out
