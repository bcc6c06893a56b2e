-- fail.lua: record one or many failed attempts, each fenced by its lease token: retry
-- with the given backoff, or fail for good.
--
-- KEYS[1] processing   KEYS[2] pending   KEYS[3] scheduled   KEYS[4] failed
-- KEYS[5] stats   KEYS[6] seq   KEYS[7] wake
-- ARGV[1] job key prefix   ARGV[2] failed_ttl_ms   ARGV[3] max failed records kept
-- ARGV[4..] 5 values per job: id, lease token, error, traceback, delay_ms where
--           delay_ms < 0 means a permanent failure (no retry whatever is left)
-- Returns {now_ms, (code, status, run_at_ms) per job}: code 1 recorded (now, or by this
-- same write sent earlier, see complete.lua), 0 rejected by the fence (counted in stats
-- 'rejected'); status is the job's new status
-- ('pending', 'scheduled' or 'failed'), run_at its due time when retried, else 0.
--
-- A retry consumes one of max_retries ('failures'); lost leases never do (reap.lua).
-- A recorded attempt gives its concurrency slot back (give_slot in _lib.lua).
-- Scheduled jobs due by now are made ready first (promote_due in _lib.lua), so that a job
-- retried at once queues behind those that were due before it.

local processing, pending, scheduled, failed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stats, seq_key, wake_key = KEYS[5], KEYS[6], KEYS[7]
local job_prefix, ttl, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {now}
-- Out of processing with one ZREM for the whole call (nothing below reads it).
local leaving = {}
-- Before any retry takes a FIFO number (see promote_due).
promote_due(job_prefix, scheduled, pending, seq_key, stats, now, PROMOTE_ON_WRITE)

for b = 4, #ARGV, 5 do
  local id, token, delay = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 4])
  local job_key = job_prefix .. id
  local done = nil
  -- The fence's read also brings what the retry decision needs (fields 7 and 8).
  local held, slot, read = holds_lease(job_key, token, 'failures', 'max_retries')
  if not held then
    -- (An error reply, for a key that is not a hash, has no fields: rejected.)
    done = redis.pcall('HMGET', job_key, 'written_by', 'status', 'run_at')
  end
  if done == nil then
    leaving[#leaving + 1] = id
    give_slot(job_prefix, job_key, id, slot)
    -- A damaged count restarts from 0, a damaged max_retries is 0 (as bump would).
    local failures = (tonumber(read[7]) or 0) + 1
    local max_retries = tonumber(read[8]) or 0
    -- What this attempt writes, in the one HSET of the job's new state.
    local fields = {'error', ARGV[b + 2], 'traceback', ARGV[b + 3], 'written_by', 'f:' .. token,
      'failures', int(failures)}
    if delay < 0 or failures > max_retries then
      finalize(job_prefix, id, 'failed', now, ttl, failed, stats, keep, read, fields)
      out[#out + 1], out[#out + 2], out[#out + 3] = 1, 'failed', 0
    elseif delay == 0 then
      fields[#fields + 1], fields[#fields + 2] = 'run_at', now
      redis.call('HSET', job_key, unpack(fields))
      redis.call('HDEL', job_key, 'lease')
      make_ready(job_key, id, pending, seq_key)
      tally(stats, 'retried', 1)
      wake(wake_key)
      out[#out + 1], out[#out + 2], out[#out + 3] = 1, 'pending', now
    else
      local run_at = now + delay
      fields[#fields + 1], fields[#fields + 2] = 'status', 'scheduled'
      fields[#fields + 1], fields[#fields + 2] = 'run_at', run_at
      redis.call('HSET', job_key, unpack(fields))
      redis.call('HDEL', job_key, 'lease')
      redis.call('ZADD', scheduled, run_at, id)
      tally(stats, 'retried', 1)
      -- An idle pool must learn the new earliest due time.
      wake(wake_key)
      out[#out + 1], out[#out + 2], out[#out + 3] = 1, 'scheduled', run_at
    end
  elseif done[1] == 'f:' .. token then
    -- This very write, sent again after its reply was lost: it is recorded.
    out[#out + 1], out[#out + 2], out[#out + 3] = 1, done[2], tonumber(done[3]) or 0
  else
    tally(stats, 'rejected', 1)
    out[#out + 1], out[#out + 2], out[#out + 3] = 0, '', 0
  end
end
zrem_all(processing, leaving)
finish_call(job_prefix)
return out
