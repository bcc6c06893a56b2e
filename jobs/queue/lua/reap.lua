-- reap.lua: return jobs whose lease expired (their worker died, hung or lost Redis) to
-- the front of the queue, or fail them once they have lost max_lost leases. Safe when
-- many pools on many hosts reap at once: it is one atomic call and expiry is judged by
-- the Redis clock alone.
--
-- KEYS[1] processing   KEYS[2] pending   KEYS[3] scheduled   KEYS[4] failed
-- KEYS[5] stats   KEYS[6] seq   KEYS[7] wake   KEYS[8] completed   KEYS[9] cancelled
-- ARGV[1] job key prefix   ARGV[2] max_lost   ARGV[3] failed_ttl_ms
-- ARGV[4] max failed records kept   ARGV[5] max jobs reaped in this call
-- ARGV[6] completed_ttl_ms, or '' not to trim the final indexes in this call
-- ARGV[7] max completed records kept (0: no bound)   ARGV[8] most deleted in this call
-- Returns {now_ms, requeued, failed, next_expiry_ms}: next_expiry_ms is the earliest
-- remaining lease deadline (-1 if none), when the next reap could find something.
--
-- An expired id whose key is not a hash is set aside (set_aside in _lib.lua). A reaped
-- job gives its concurrency slot back (give_slot); so does, in effect, one whose record is
-- gone or set aside (flow_record_gone).
--
-- Lost leases are counted apart from handler failures ('lost', stats 'lost_leases') and
-- never consume max_retries. The lost attempt stays counted in 'attempts': its handler
-- may well have started.

local processing, pending, scheduled, failed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stats, seq_key, wake_key = KEYS[5], KEYS[6], KEYS[7]
local job_prefix, max_lost = ARGV[1], tonumber(ARGV[2])
local ttl, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local requeued, dead = 0, 0
local gone = false  -- a leased job's record was gone or damaged: see flow_record_gone

local expired = redis.call('ZRANGEBYSCORE', processing, '-inf', '(' .. now,
  'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(expired) do
  local job_key = job_prefix .. id
  redis.call('ZREM', processing, id)
  local kind = record_type(job_key)
  if kind == 'none' then
    gone = true
  elseif kind ~= 'hash' then
    set_aside(stats, job_key, kind)
    gone = true
  elseif redis.call('HGET', job_key, 'status') == 'processing' then
    give_slot(job_prefix, job_key, id)
    redis.call('HDEL', job_key, 'lease')
    tally(stats, 'lost_leases', 1)
    if bump(job_key, 'lost', 1) >= max_lost then
      redis.call('HSET', job_key, 'error', 'lease expired (worker lost)')
      finalize(job_prefix, id, 'failed', now, ttl, failed, stats, keep)
      dead = dead + 1
    else
      make_ready_front(job_key, id, pending, seq_key)
      requeued = requeued + 1
    end
  end
end

if gone and flow_record_gone(job_prefix) then
  wake(wake_key)
end

-- Finished records expire by themselves; their index entries are trimmed whenever a job
-- finishes (finalize), and here too, so that a queue that went quiet keeps no entries
-- for records long gone.
if ARGV[6] ~= '' then
  local completed_ttl = tonumber(ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', '(' .. int(now - completed_ttl))
  redis.call('ZREMRANGEBYSCORE', failed, '-inf', '(' .. int(now - ttl))
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. int(now - ttl))
end

-- Completed records are bounded by count here, a slice per call, rather than in
-- finalize: that would cost every completion a ZCARD.
local keep_completed = tonumber(ARGV[7])
if keep_completed > 0 then
  local excess = redis.call('ZCARD', KEYS[8]) - keep_completed
  if excess > 0 then
    local old = redis.call('ZRANGE', KEYS[8], 0, math.min(excess, tonumber(ARGV[8])) - 1)
    del_records(job_prefix, old)
    redis.call('ZREM', KEYS[8], unpack(old))
  end
end

-- Also heals a lost wake-up (a pool took the marker and died before fetching).
local next_due = earliest(scheduled)
if redis.call('ZCARD', pending) > 0 or (next_due >= 0 and next_due <= now) then
  wake(wake_key)
end
finish_call(job_prefix)
return {now, requeued, dead, earliest(processing)}
