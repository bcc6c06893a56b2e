-- enqueue.lua: add one or many jobs atomically; an id that already exists is left alone.
-- Producers send jobs with neither a unique key nor dependencies to enqueue_plain.lua,
-- which writes the same for them in less server time.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] stats   KEYS[5] wake
-- KEYS[6] types (job type -> its declared settings, published by worker pools)
-- ARGV[1] job key prefix (B..'job:')
-- ARGV[2..8] the batch's settings: type, priority, max_retries, timeout_ms ('' = none),
--           backoff (JSON spec), metadata (JSON), delay_ms
-- ARGV[9] the unique key's full name (B..'unique:'..key), '' for none
-- ARGV[10] unique_for_ms: how long the key stays taken after the job finished
-- ARGV[11] the settings the producer left at the library default, as letters of
--           'prtb' (priority, max_retries, timeout_ms, backoff): the type's declared
--           ones replace them; '' to look nothing up
-- ARGV[12] '1': refuse a type no worker pool declared (strict producers), else '0'
-- ARGV[13] the ids every job of the batch depends on (JobConfig.depends_on), a JSON
--           array; '' for none
-- ARGV[14] '1': a dependency's failure or cancellation does not cancel the jobs, they
--           run once every dependency is final (JobConfig.depends_on_any_outcome)
-- ARGV[15] failed_ttl_ms   ARGV[16] max cancelled records kept: for jobs cancelled at
--           once because a dependency has already failed or been cancelled
-- ARGV[17..] 2 values per job: id, payload (JSON)
-- Returns {now_ms, created_1, ..., created_n}: 1 written, 0 the id already existed, or
-- the id of the job that holds the unique key (nothing written); an error reply starting
-- with UNKNOWN_TYPE when ARGV[12] is '1' and the type is not declared, or with
-- NO_DEPENDENCY and the id when a dependency has no record (nothing written either way).
--
-- Dependencies (see "Dependencies" in _lib.lua): a job whose dependencies are all
-- completed already (or final, with ARGV[14]) is written ready as usual; one with a
-- dependency not final yet is written 'waiting'; one with a dependency that already
-- failed or was cancelled is written and cancelled at once, naming it: all in this one
-- call, so a dependency that finishes meanwhile cannot be missed.
-- Scheduled jobs due by now are made ready first (promote_due in _lib.lua), so that they
-- keep their place ahead of these in FIFO order.
--
-- Record fields written (add_job in _lib.lua): id type payload status priority
-- max_retries timeout_ms backoff metadata created_at run_at score (run_at only for a
-- delayed job, else it is created_at; attempts, failures and lost appear once they are
-- not 0), and for a job with dependencies deps, waits and after
-- (record_dependencies). Later scripts add started_at, completed_at, lease, error,
-- traceback, result, written_by.

local pending, scheduled, seq_key, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_prefix = ARGV[1]
local now = now_ms()
local out = {now}
local created = 0
local n = (#ARGV - 16) / 2
local unique, unique_for = ARGV[9], ARGV[10]
local priority, max_retries, timeout_ms, backoff = ARGV[3], ARGV[4], ARGV[5], ARGV[6]

priority, max_retries, timeout_ms, backoff = declared_settings(KEYS[6], ARGV[2], ARGV[11],
  ARGV[12] == '1', priority, max_retries, timeout_ms, backoff)
if not priority then
  return redis.error_reply('UNKNOWN_TYPE no worker pool declared job type ' .. ARGV[2])
end
local deps_json, any_outcome = ARGV[13], ARGV[14] == '1'
local deps, unmet, doomed, doomed_status = nil, nil, false, nil
if deps_json ~= '' then
  -- Checked before any write: a missing dependency refuses the whole batch.
  deps = cjson.decode(deps_json)
  local first, second, third = read_dependencies(job_prefix, deps, any_outcome)
  if not first then
    return redis.error_reply('NO_DEPENDENCY ' .. second)
  end
  unmet, doomed, doomed_status = first, second, third
end
local hold = deps ~= nil and (#unmet > 0 or doomed ~= false)
-- Jobs due by now are ready before these (see promote_due).
local promoted = promote_due(job_prefix, scheduled, pending, seq_key, stats, now, PROMOTE_ON_WRITE)
-- One INCRBY for the whole batch keeps FIFO order and saves a call per job.
local seq = take(seq_key, n) - n

local adds = {pending = {}, scheduled = {}, waiting = {}}
local held = {}
for b = 17, #ARGV, 2 do
  seq = seq + 1
  local holder = unique ~= '' and unique_holder(unique, job_prefix, now)
  if holder then
    out[#out + 1] = holder
  elseif add_job(job_prefix, adds, now, seq, ARGV[b], ARGV[2], ARGV[b + 1], priority,
                 max_retries, timeout_ms, backoff, ARGV[7], ARGV[8], true, hold) then
    if unique ~= '' then
      take_unique(unique, job_prefix .. ARGV[b], ARGV[b], unique_for)
    end
    if deps then
      record_dependencies(job_prefix .. ARGV[b], deps_json, doomed and {} or unmet, any_outcome)
      held[#held + 1] = ARGV[b]
    end
    created = created + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
flush_adds(pending, scheduled, stats, adds, now)
if doomed then
  local cancelled = base_of(stats, 'stats') .. 'cancelled'
  for _, id in ipairs(held) do
    redis.call('ZREM', base_of(stats, 'stats') .. 'waiting', id)
    redis.call('HSET', job_prefix .. id, 'error', dependency_reason(doomed, doomed_status))
    finalize(job_prefix, id, 'cancelled', now, tonumber(ARGV[15]), cancelled, stats,
      tonumber(ARGV[16]))
  end
  finish_call(job_prefix)
elseif hold and #held > 0 then
  add_dependents(job_prefix, unmet, held)
end
if (created > 0 and not hold) or promoted > 0 then
  -- Also for delayed jobs: an idle pool must learn the new earliest due time. (Not for
  -- waiting ones: the script that releases them wakes the pools.)
  wake(wake_key)
end
return out
