-- heartbeat.lua: one pool's periodic beat: refresh its registry record and extend the
-- leases of every job it holds, each fenced by its lease token.
--
-- KEYS[1] processing   KEYS[2] workers   KEYS[3] this pool's record (B..'worker:'..id)
-- ARGV[1] job key prefix   ARGV[2] lease_ms   ARGV[3] record ttl_ms ('0' = no record)
-- ARGV[4] pool id   ARGV[5] record JSON (hostname, pid, num_workers, in_flight)
-- ARGV[6] '1' on the pool's first beat, else '0'
-- ARGV[7..] 3 values per held job: id, lease token, progress (JSON [fraction, message]
--           to store, '' for no change: JobContext.progress, coalesced into the beat)
-- Returns {now_ms, code_1, ..., code_n}: 1 extended; 2 the job was cancelled (stop it);
-- 0 the lease is lost (expired and re-delivered, or the record is gone): stop it, its
-- result would be rejected anyway.
-- An extended lease extends the job's concurrency slot with it (extend_slot in _lib.lua).

local processing, workers, record = KEYS[1], KEYS[2], KEYS[3]
local job_prefix, lease_ms, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()

if ttl > 0 then
  redis.call('HSET', record, 'info', ARGV[5], 'last_seen', now)
  -- Every beat, not just the first: a failover may have lost the first one.
  redis.call('HSETNX', record, 'started_at', now)
  redis.call('PEXPIRE', record, ttl)
  redis.call('ZADD', workers, now + ttl, ARGV[4])
  if ARGV[6] == '1' then
    -- A pool's first beat clears out pools that died unnoticed (workers.lua also drops
    -- them whenever the list is read).
    redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
  end
end

local out = {now}
local deadline = now + lease_ms
for b = 7, #ARGV, 3 do
  local id = ARGV[b]
  local job_key = job_prefix .. id
  local held, slot = holds_lease(job_key, ARGV[b + 1])
  if held then
    redis.call('ZADD', processing, 'XX', deadline, id)
    extend_slot(job_prefix, id, deadline, slot)
    if ARGV[b + 2] ~= '' then
      redis.call('HSET', job_key, 'progress', ARGV[b + 2])
    end
    out[#out + 1] = 1
  elseif field_of(job_key, 'status') == 'cancelled' then
    out[#out + 1] = 2
  else
    out[#out + 1] = 0
  end
end
return out
