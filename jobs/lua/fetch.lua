-- fetch.lua: promote due jobs, then pop up to N of the best ready jobs and lease them,
-- all in one atomic call.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] processing   KEYS[4] seq
-- KEYS[5] lease_seq   KEYS[6] wake   KEYS[7] stats
-- ARGV[1] job key prefix   ARGV[2] N (max jobs)   ARGV[3] lease_ms
-- ARGV[4] max due jobs to promote in this call
-- ARGV[5] a random nonce from the caller, part of every lease token it gets: the
--         lease_seq counter alone could repeat after a failover to a replica that had
--         not seen its last increments, and a token must never be handed out twice.
-- Returns {now_ms, next_event_ms, job_1, ..., job_k} where job_i is the record's values
-- in the order of FIELDS below (jobs._codec.FETCHED_FIELDS; missing ones nil), with
-- status processing, attempts + 1 and a fresh lease token in 'lease'; and
-- next_event_ms is when the earliest scheduled job is due (-1 if none): an idle pool may
-- block until then. (Expired leases are returned to pending by reap.lua, which wakes.)
--
-- Strict priority, FIFO within a priority (ready_score). A popped id whose record is
-- gone (deleted by hand, or a corrupt queue) is dropped rather than leased; one whose key
-- is not a hash is set aside (set_aside in _lib.lua), as is a due one (promote_due).

local pending, scheduled, processing = KEYS[1], KEYS[2], KEYS[3]
local seq_key, lease_seq, wake_key = KEYS[4], KEYS[5], KEYS[6]
local job_prefix, n, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
-- Values only, in a fixed order: no field names to send or to parse for every job.
local FIELDS = {'id', 'type', 'payload', 'status', 'priority', 'max_retries', 'timeout_ms',
  'backoff', 'metadata', 'created_at', 'run_at', 'started_at', 'completed_at', 'attempts',
  'failures', 'lost', 'error', 'result', 'lease'}

promote_due(job_prefix, scheduled, pending, seq_key, KEYS[7], now, tonumber(ARGV[4]))

local out = {now, -1}
local popped = redis.call('ZPOPMIN', pending, n)
local count = #popped / 2
if count > 0 then
  local token = take(lease_seq, count) - count
  local deadline = now + lease_ms
  for i = 1, #popped, 2 do
    local id = popped[i]
    local job_key = job_prefix .. id
    local kind = record_type(job_key)
    if kind ~= 'hash' and kind ~= 'none' then
      set_aside(KEYS[7], job_key, kind)
    elseif kind == 'hash' then
      token = token + 1
      bump(job_key, 'attempts', 1)
      -- 'id' again: a record that lost it would otherwise reach the worker nameless.
      redis.call('HSET', job_key, 'id', id, 'status', 'processing', 'started_at', now,
        'lease', ARGV[5] .. ':' .. int(token))
      redis.call('ZADD', processing, deadline, id)
      out[#out + 1] = redis.call('HMGET', job_key, unpack(FIELDS))
    end
  end
end

-- More work than this pool can take: pass the wake-up on to the next idle pool.
if redis.call('ZCARD', pending) > 0 then
  wake(wake_key)
end

out[2] = earliest(scheduled)
return out
