-- cancel.lua: cancel a job in any non-final state. A running job is recorded cancelled
-- at once and its lease revoked, so its worker's late result is rejected by the fence;
-- the worker notices on its next heartbeat (heartbeat.lua answers 2) and cancels the
-- handler's token.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] processing   KEYS[4] cancelled
-- KEYS[5] stats   KEYS[6] this request's record (B..'req:'..request id)
-- ARGV[1] job key prefix   ARGV[2] id   ARGV[3] failed_ttl_ms   ARGV[4] max records kept
-- ARGV[5] how long the request's answer is remembered (ms)
-- Returns -1 no such job (or its key is not a job record); 0 already final (completed,
-- failed or cancelled);
-- 1 cancelled before it ran (pending, scheduled or waiting for dependencies); 2
-- cancelled while running.
--
-- Jobs that wait for this one are cancelled with it, transitively, each naming the
-- dependency that cancelled it (finalize in _lib.lua), unless they run whatever its
-- outcome (JobConfig.depends_on_any_outcome). A waiting job also leaves its
-- dependencies' dependents hashes. A running job gives its concurrency slot back
-- (give_slot in _lib.lua); a pending one held back by its type's limits leaves its
-- held-back list (flow_unready).
--
-- The request id (random per call, in KEYS[6]) makes a cancel sent again after its reply
-- was lost (redis-py does so by itself) answer what the first one did, not "already
-- final": a cancel that acted records its code, and a request seen before changes nothing.

local pending, scheduled, processing, cancelled, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local request = KEYS[6]
local job_prefix, id = ARGV[1], ARGV[2]
local answered = redis.call('HGET', request, 'code')
if answered then
  return tonumber(answered)
end
local job_key = job_prefix .. id
local status = field_of(job_key, 'status')
if not status then
  return -1
end
local code
if status == 'pending' then
  if redis.call('ZREM', pending, id) == 0 then
    flow_unready(job_prefix, job_key, id)  -- held back by its type's limits
  end
  code = 1
elseif status == 'scheduled' then
  redis.call('ZREM', scheduled, id)
  code = 1
elseif status == 'processing' then
  redis.call('ZREM', processing, id)
  give_slot(job_prefix, job_key, id)
  code = 2
elseif status == 'waiting' then
  redis.call('ZREM', base_of(pending, 'pending') .. 'waiting', id)
  forget_dependencies(job_prefix, job_key, id)
  code = 1
else
  return 0
end
finalize(job_prefix, id, 'cancelled', now_ms(), tonumber(ARGV[3]), cancelled, stats,
  tonumber(ARGV[4]))
redis.call('HSET', request, 'code', code)
redis.call('PEXPIRE', request, tonumber(ARGV[5]))
finish_call(job_prefix)
return code
