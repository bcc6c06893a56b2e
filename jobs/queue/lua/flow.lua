-- flow.lua: create a group or chain (jobs.group, jobs.chain) in one atomic call: jobs of
-- any types and settings, each waiting for any of the jobs written before it in the same
-- call, or for jobs that exist already. All of them are written, or none.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] stats   KEYS[5] wake
-- KEYS[6] types (job type -> its declared settings, published by worker pools)
-- KEYS[7] waiting
-- ARGV[1] job key prefix   ARGV[2] failed_ttl_ms   ARGV[3] max cancelled records kept
-- ARGV[4] '1': refuse a type no worker pool declared (strict producers), else '0'
-- ARGV[5] P, how many settings profiles follow
-- ARGV[6 .. 5 + 9P] 9 values per profile: type, priority, max_retries, timeout_ms ('' =
--           none), backoff (JSON spec), metadata (JSON), delay_ms, the settings left at
--           the library default (letters of 'prtb', as enqueue.lua takes them), and '1'
--           when a dependency's failure or cancellation does not cancel the job
--           (JobConfig.depends_on_any_outcome), else '0'
-- ARGV[6 + 9P ..] 4 values per job, in an order where each job comes after every job
--           of this call it depends on: id, profile number (1-based), payload (JSON), the
--           ids it depends on (a JSON array; '' for none)
-- Returns {now_ms}; an error reply, with nothing written, starting with UNKNOWN_TYPE (a
-- strict producer, an undeclared type), NO_DEPENDENCY and the id (a dependency that is
-- neither in this call nor an existing job), or ID_TAKEN and the id (a job id of this
-- call exists already).
--
-- Each job is written as enqueue.lua writes a job with dependencies (see "Dependencies"
-- in _lib.lua): ready, waiting, or (a dependency outside this call failed or was
-- cancelled already) cancelled at once with its reason, which cancels the jobs of this
-- call that wait for it in turn.

local pending, scheduled, seq_key, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_prefix = ARGV[1]
local strict = ARGV[4] == '1'
local profile_count = tonumber(ARGV[5])
local PROFILE = 9
local first_job = 6 + PROFILE * profile_count

local profiles = {}
for p = 1, profile_count do
  local a = 6 + PROFILE * (p - 1)
  local priority, max_retries, timeout_ms, backoff = declared_settings(KEYS[6], ARGV[a],
    ARGV[a + 7], strict, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  if not priority then
    return redis.error_reply('UNKNOWN_TYPE no worker pool declared job type ' .. ARGV[a])
  end
  profiles[p] = {type = ARGV[a], priority = priority, max_retries = max_retries,
    timeout_ms = timeout_ms, backoff = backoff, metadata = ARGV[a + 5], delay = ARGV[a + 6],
    any_outcome = ARGV[a + 8] == '1'}
end

-- Everything is checked before the first write.
local here = {}
local deps_of = {}
for b = first_job, #ARGV, 4 do
  local id = ARGV[b]
  if redis.call('EXISTS', job_prefix .. id) == 1 then
    return redis.error_reply('ID_TAKEN ' .. id)
  end
  here[id] = true
  if ARGV[b + 3] ~= '' then
    local deps = cjson.decode(ARGV[b + 3])
    for _, dep in ipairs(deps) do
      if not here[dep] and not field_of(job_prefix .. dep, 'status') then
        return redis.error_reply('NO_DEPENDENCY ' .. dep)
      end
    end
    deps_of[id] = deps
  end
end

local now = now_ms()
local n = (#ARGV - first_job + 1) / 4
promote_due(job_prefix, scheduled, pending, seq_key, stats, now, PROMOTE_ON_WRITE)
local seq = take(seq_key, n) - n
local adds = {pending = {}, scheduled = {}, waiting = {}}
local doomed_jobs = {}
for b = first_job, #ARGV, 4 do
  seq = seq + 1
  local id = ARGV[b]
  local profile = profiles[tonumber(ARGV[b + 1])]
  local deps = deps_of[id]
  local unmet, doomed, doomed_status = {}, false, nil
  if deps then
    -- The jobs of this call it depends on are written already (the order above).
    unmet, doomed, doomed_status = read_dependencies(job_prefix, deps, profile.any_outcome)
  end
  local hold = #unmet > 0 or doomed ~= false
  add_job(job_prefix, adds, now, seq, id, profile.type, ARGV[b + 2], profile.priority,
    profile.max_retries, profile.timeout_ms, profile.backoff, profile.metadata, profile.delay,
    false, hold)
  if deps then
    local job_key = job_prefix .. id
    if doomed then
      record_dependencies(job_key, ARGV[b + 3], {}, profile.any_outcome)
      doomed_jobs[#doomed_jobs + 1] = {id, dependency_reason(doomed, doomed_status)}
    else
      record_dependencies(job_key, ARGV[b + 3], unmet, profile.any_outcome)
      add_dependents(job_prefix, unmet, {id})
    end
  end
end
flush_adds(pending, scheduled, stats, adds, now)

local cancelled = base_of(stats, 'stats') .. 'cancelled'
for _, entry in ipairs(doomed_jobs) do
  local job_key = job_prefix .. entry[1]
  -- An earlier cancel in this loop may have cancelled it already, as a dependent.
  if redis.call('HGET', job_key, 'status') == 'waiting' then
    redis.call('ZREM', KEYS[7], entry[1])
    redis.call('HSET', job_key, 'error', entry[2])
    finalize(job_prefix, entry[1], 'cancelled', now, tonumber(ARGV[2]), cancelled, stats,
      tonumber(ARGV[3]))
  end
end
finish_call(job_prefix)
wake(wake_key)
return {now}
