-- _lib.lua: helpers shared by every script. `jobs._scripts` prepends this file to each
-- script before loading it, so each script stays one atomic EVALSHA.
--
-- Key schema of one queue (B = "{prefix:name}:", the hash tag keeps one queue in one
-- Redis Cluster slot):
--   B..'job:'..id     hash  the job record (fields: see enqueue.lua)
--   B..'pending'      zset  ready ids, score = priority band + sequence (see ready_score)
--   B..'scheduled'    zset  delayed and backing-off ids, score = run_at (ms)
--   B..'processing'   zset  leased ids, score = lease deadline (ms)
--   B..'completed'    zset  finished ids, score = completed_at (ms); same for 'failed',
--                           'cancelled'. Records expire on their own (PEXPIRE); these
--                           indexes are trimmed by age, and failed/cancelled by count.
--   B..'stats'        hash  cumulative counters (total, completed, failed, cancelled,
--                           retried, lost_leases, rejected, damaged, last_processed)
--   B..'history:'..m  hash  jobs per minute m (= floor(ms / 60000), server clock): fields
--                           enqueued, completed, failed, cancelled. Expires
--                           HISTORY_MINUTES after its minute ends (see count_minute).
--   B..'seq'          str   FIFO sequence for ready_score
--   B..'lease_seq'    str   lease tokens: every delivery gets a fresh one (fencing)
--   B..'wake'         list  wake-up marker that idle pools block on (BLPOP)
--   B..'workers'      zset  live pool ids, score = record expiry (ms)
--   B..'worker:'..id  hash  one pool's self-reported record
--   B..'crons'        zset  cron job ids, score = next run (ms) as last announced
--   B..'cron:'..id    hash  one cron job's state: last_fire, last_job_id, next_run,
--                           schedule, job_type, enabled (see cron_fire.lua)
--   B..'unique:'..key str   the id of the job holding a unique key (see unique_holder)
--   B..'types'        hash  job type -> its declared settings (JSON), by worker pools
--   B..'waiting'      zset  ids waiting for their dependencies (JobConfig.depends_on),
--                           score = their ready score at enqueue (so, enqueue order)
--   B..'dependents:'..id  hash  the waiting jobs that wait for job id (fields; values
--                           '1'); deleted when id reaches a final state and releases or
--                           cancels them. A hash, not a set: the least-privilege ACL
--                           rule (README.rst) then needs no set commands.
--   B..'finished'     pub/sub channel (not a key): a JSON array of the ids that reached
--                     a final state in one script call (see finish_call)
--   B..'req:'..id     one request's record, so that a request sent again after its reply
--                           was lost is not applied twice; short-lived (PEXPIRE). A fetch's
--                           is a hash too (fetch.lua), as a cancel's or retry's (cancel.lua)
--
-- Per-job keys are built here from ARGV[1] (= B..'job:') because their ids are often
-- only known inside the script (popped, promoted, reaped). They carry the same hash tag
-- as the KEYS, so every script still touches exactly one cluster slot.
--
-- All times come from the Redis server clock (TIME), never from a worker's host, so
-- workers with skewed clocks still agree on leases, delays and backoffs.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers past 2^31 must not go through tostring(), whose %.14g loses digits.
local function int(x)
  return string.format('%.0f', x)
end

-- The text of a number known to be whole (a time in ms, a lease number): %d prints it
-- through a C long, at a third of the cost of int()'s %.0f. A number passed as such to
-- redis.call costs as much as int() (Redis prints it with %.17g), so the hot paths
-- (fetch, finalize) pass what they write for every job as text made once.
local function whole(x)
  return string.format('%d', x)
end

-- Add `by` to a counter of a job record. A value that is not a number (a record damaged
-- by hand or by another tool) counts as 0: HINCRBY would abort the script half way,
-- after jobs were already taken out of one index and before they reached the next.
local function bump(job_key, field, by)
  local value = (tonumber(redis.call('HGET', job_key, field)) or 0) + by
  redis.call('HSET', job_key, field, int(value))
  return value
end

-- Add `by` to a counter of the stats hash. A damaged counter (not an integer) restarts
-- from `by`, as in bump; a stats key that is not a hash loses the count. Either way the
-- script goes on: raising here would leave the jobs it already moved half-way.
local function tally(stats_key, field, by)
  local reply = redis.pcall('HINCRBY', stats_key, field, by)
  if type(reply) == 'table' and reply.err then
    redis.pcall('HSET', stats_key, field, by)
  end
end

-- A field of a hash, or false when it is missing or the key is not a hash at all.
local function field_of(key, field)
  local value = redis.pcall('HGET', key, field)
  if type(value) == 'table' then
    return false
  end
  return value
end

-- What a key holds: 'hash' (a record), 'none' (gone: purged, expired, deleted by hand)
-- or the name of another type that a foreign tool or a hand edit left there. Not TYPE
-- first: a worker's least-privilege ACL (docs/operations/security.rst) need not allow
-- it, and one HGET answers for nearly every record.
local function record_type(key)
  local probe = redis.pcall('HGET', key, 'id')
  if type(probe) == 'table' then
    local kind = redis.pcall('TYPE', key)
    return kind.ok or 'value of another type'
  end
  if probe or redis.call('EXISTS', key) == 1 then
    return 'hash'
  end
  return 'none'
end

-- An indexed id whose key is not a hash is no job any script can read or change: every
-- command on it fails, and a script that fails after its first write is not rolled back,
-- which would strand the jobs it had already moved (or, in the scheduled set, wedge every
-- fetch). The caller takes the id out of its index; it is counted in stats 'damaged'
-- (`QueueStats.damaged_records`) and named in the Redis server's log. The key itself is
-- left as it was found, for whoever wrote it.
local function set_aside(stats_key, job_key, kind)
  tally(stats_key, 'damaged', 1)
  redis.log(redis.LOG_WARNING,
    'jobs: ' .. job_key .. ' holds a ' .. kind .. ', not a job record: taken out of its index')
end

-- Take `n` numbers from a counter (seq, lease_seq); returns the last one taken. A damaged
-- counter (not an integer, or not a string at all) restarts from the current time in
-- ms: above any count a queue reaches and below ready_score's 2^42 band, so FIFO order
-- and unique lease tokens hold, and the script goes on instead of failing after writes
-- (fetch had already popped its jobs when it took their lease numbers).
local function take(counter_key, n)
  local last = redis.pcall('INCRBY', counter_key, n)
  if type(last) == 'table' then
    redis.call('DEL', counter_key)
    last = redis.call('INCRBY', counter_key, now_ms() + n)
  end
  return last
end

-- Strict priority, FIFO within a priority: priority in the high part (higher priority =
-- lower score), a per-queue sequence below. (1000 - p) * 2^42 + seq stays exact in a
-- double for p in -1000..1000 and 4.4e12 sequence numbers.
local function ready_score(priority, seq)
  return (1000 - tonumber(priority)) * 4398046511104 + seq
end

-- One marker is enough: the pool that takes it re-arms it when work remains (fetch.lua).
local function wake(wake_key)
  local length = redis.pcall('LLEN', wake_key)
  if type(length) == 'table' then
    redis.call('DEL', wake_key)  -- not a list: damaged, and nothing but a marker is lost
    length = 0
  end
  if length == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end

-- The fields of a new job's record that it has only when they are not at their default,
-- appended to `fields` (a missing run_at is created_at: due at once; a missing backoff
-- is the default exponential one; a missing timeout_ms is none; missing metadata is {}):
-- less to write. The jobs of one enqueue_plain.lua call share them.
local function optional_fields(fields, delay, run_at, backoff, timeout_ms, metadata)
  if delay > 0 then
    fields[#fields + 1], fields[#fields + 2] = 'run_at', run_at
  end
  if backoff ~= '' then
    fields[#fields + 1], fields[#fields + 2] = 'backoff', backoff
  end
  if timeout_ms ~= '' then
    fields[#fields + 1], fields[#fields + 2] = 'timeout_ms', timeout_ms
  end
  if metadata ~= '{}' then
    fields[#fields + 1], fields[#fields + 2] = 'metadata', metadata
  end
  return fields
end

-- Write a new job record; false when `check` and the id already exists, so that a
-- deterministic id (a cron fire) enqueues at most once. The job's index entry is
-- appended to `adds` (adds.pending / adds.scheduled: flat score, member lists) for
-- `flush_adds`, so that a batch costs one ZADD per index. Fields at their default are
-- left out (see optional_fields; a missing attempts/failures/lost is 0).
-- `hold`: the job waits for dependencies (status 'waiting', indexed in adds.waiting by
-- its ready score; its delay still counts from now, see release_dependent).
local function add_job(job_prefix, adds, now, seq, id, job_type, payload, priority,
                       max_retries, timeout_ms, backoff, metadata, delay, check, hold)
  local job_key = job_prefix .. id
  if check and redis.call('EXISTS', job_key) == 1 then
    return false
  end
  local score = int(ready_score(priority, seq))
  local status, run_at, index = 'pending', now, adds.pending
  delay = tonumber(delay)
  if delay > 0 then
    run_at = now + delay
  end
  if hold then
    status, index = 'waiting', adds.waiting
    index[#index + 1], index[#index + 2] = score, id
  elseif delay > 0 then
    status, index = 'scheduled', adds.scheduled
    index[#index + 1], index[#index + 2] = run_at, id
  else
    index[#index + 1], index[#index + 2] = score, id
  end
  local fields = optional_fields({'id', id, 'type', job_type, 'payload', payload,
    'status', status, 'priority', priority, 'max_retries', max_retries, 'created_at', now,
    'score', score}, delay, run_at, backoff, timeout_ms, metadata)
  redis.call('HSET', job_key, unpack(fields))
  return true
end

-- The settings a producer left at the library default (`letters`, of 'prtb': priority,
-- max_retries, timeout_ms, backoff) replaced by those the job type declared (B..'types',
-- published by worker pools). Returns all four; nil when `strict` and no pool declared
-- the type. Reads nothing when there is nothing to replace and nothing to refuse.
local function declared_settings(types_key, job_type, letters, strict, priority,
                                 max_retries, timeout_ms, backoff)
  if letters == '' and not strict then
    return priority, max_retries, timeout_ms, backoff
  end
  local declared = field_of(types_key, job_type)
  if not declared then
    if strict then
      return nil
    end
    return priority, max_retries, timeout_ms, backoff
  end
  local ok, settings = pcall(cjson.decode, declared)
  if ok and type(settings) == 'table' then
    local function pick(letter, current)
      local value = settings[letter]
      if type(value) == 'string' and string.find(letters, letter, 1, true) then
        return value
      end
      return current
    end
    priority, max_retries = pick('p', priority), pick('r', max_retries)
    timeout_ms, backoff = pick('t', timeout_ms), pick('b', backoff)
  end
  return priority, max_retries, timeout_ms, backoff
end

-- Per-minute history, so that rates over the last hour read in O(60) with no metrics
-- server. One HINCRBY per count; the expiry is set only by the first count of a field in
-- a minute, always to the same moment (PEXPIRE, not PEXPIREAT: one ACL permission less).
local HISTORY_MINUTES = 61

local function count_minute(base, now, field, by)
  local minute = math.floor(now / 60000)
  -- tostring, not int: a minute number stays far below the 1e14 where it loses digits.
  local key = base .. 'history:' .. tostring(minute)
  -- pcall: a history key damaged by hand (not a hash, not a number) loses its count
  -- rather than aborting the script after the job moved (an error reply is a table).
  if redis.pcall('HINCRBY', key, field, by) == by then
    redis.call('PEXPIRE', key, int((minute + 1 + HISTORY_MINUTES) * 60000 - now))
  end
end

-- B from one of the queue's keys named B..suffix.
local function base_of(key, suffix)
  return string.sub(key, 1, #key - #suffix)
end

-- ZADD in slices: unpack() of a whole 10,000-job group would pass Lua's C stack limit.
local ZADD_SLICE = 4000

local function zadd_all(key, flat)
  for first = 1, #flat, ZADD_SLICE do
    redis.call('ZADD', key, unpack(flat, first, math.min(first + ZADD_SLICE - 1, #flat)))
  end
end

-- ZREM of many ids in one command per slice (a batch costs one call, not one per job).
local function zrem_all(key, ids)
  for first = 1, #ids, ZADD_SLICE do
    redis.call('ZREM', key, unpack(ids, first, math.min(first + ZADD_SLICE - 1, #ids)))
  end
end

-- Delete the records of many ids (all in this queue's slot) with one DEL per slice.
local function del_records(job_prefix, ids)
  local keys = {}
  for i, id in ipairs(ids) do
    keys[i] = job_prefix .. id
  end
  for first = 1, #keys, ZADD_SLICE do
    redis.call('DEL', unpack(keys, first, math.min(first + ZADD_SLICE - 1, #keys)))
  end
end

-- adds.waiting (jobs held for their dependencies) goes to B..'waiting'. Every job added
-- is new: counted in stats 'total' and in this minute's history.
local function flush_adds(pending, scheduled, stats_key, adds, now)
  if #adds.pending > 0 then
    zadd_all(pending, adds.pending)
  end
  if #adds.scheduled > 0 then
    zadd_all(scheduled, adds.scheduled)
  end
  local held = adds.waiting and #adds.waiting or 0
  if held > 0 then
    zadd_all(base_of(pending, 'pending') .. 'waiting', adds.waiting)
  end
  local added = (#adds.pending + #adds.scheduled + held) / 2
  if added > 0 then
    tally(stats_key, 'total', added)
    count_minute(base_of(pending, 'pending'), now, 'enqueued', added)
  end
end

-- Make a job ready to run: a fresh FIFO position within its priority.
local function make_ready(job_key, id, pending_key, seq_key)
  -- A damaged priority counts as 0 (see bump); the worker then fails the job by name.
  local priority = tonumber(redis.call('HGET', job_key, 'priority')) or 0
  local score = ready_score(priority, take(seq_key, 1))
  redis.call('ZADD', pending_key, int(score), id)
  redis.call('HSET', job_key, 'status', 'pending', 'score', int(score))
  -- A new attempt starts with no progress (the last one's was JobContext.progress's).
  redis.call('HDEL', job_key, 'progress')
end

-- Put a job back at the front of its priority: its previous position is ahead of every
-- job that became ready after it.
local function make_ready_front(job_key, id, pending_key, seq_key)
  local score = redis.call('HGET', job_key, 'score')
  if not tonumber(score) then
    return make_ready(job_key, id, pending_key, seq_key)
  end
  redis.call('ZADD', pending_key, score, id)
  redis.call('HSET', job_key, 'status', 'pending')
  redis.call('HDEL', job_key, 'progress')
end

-- Make due scheduled jobs (delayed, or waiting out a retry backoff) ready, earliest
-- first. Every script that gives out FIFO sequence numbers calls this first (enqueue,
-- cron_fire, fail, retry, as well as fetch): a job that became due before a job was
-- enqueued or retried then always gets the lower number, so FIFO order within a priority
-- follows the time jobs became ready, not the time a fetch happened to promote them.
-- (Past `limit` due jobs, the rest follow at the next call, behind what it enqueues.)
-- Returns how many were promoted.
local function promote_due(job_prefix, scheduled, pending, seq_key, stats_key, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then
    return 0
  end
  for _, id in ipairs(due) do
    local job_key = job_prefix .. id
    local kind = record_type(job_key)
    if kind == 'hash' then
      make_ready(job_key, id, pending, seq_key)
    elseif kind ~= 'none' then
      set_aside(stats_key, job_key, kind)
    end
  end
  redis.call('ZREM', scheduled, unpack(due))
  return #due
end

-- Due jobs promoted by a script other than fetch (which is told its own bound).
local PROMOTE_ON_WRITE = 1000

-- Unique jobs (JobConfig.unique_key): B..'unique:'..key names the job that holds the key.
-- The key is free when that job's record is gone or final (past its unique_for window):
-- checked here, at enqueue, so a purge or an expiry needs no extra step; finalize also
-- releases it (or starts the window) so that the key does not outlive its use.
local FINAL = {completed = true, failed = true, cancelled = true}

local function unique_holder(unique_key, job_prefix, now)
  local holder = redis.pcall('GET', unique_key)
  if type(holder) ~= 'string' then
    return nil  -- free, or damaged: taken over
  end
  local fields = redis.pcall('HMGET', job_prefix .. holder, 'status', 'completed_at',
    'unique_for', 'unique')
  -- Gone, damaged, or a record made since under the same id without this key: free.
  if type(fields) ~= 'table' or fields.err or not fields[1] or fields[4] ~= unique_key then
    return nil
  end
  if FINAL[fields[1]] then
    local window = tonumber(fields[3]) or 0
    if window <= 0 or (tonumber(fields[2]) or 0) + window <= now then
      return nil
    end
  end
  return holder
end

local function take_unique(unique_key, job_key, id, unique_for)
  redis.call('SET', unique_key, id)
  redis.call('HSET', job_key, 'unique', unique_key)
  if tonumber(unique_for) > 0 then
    redis.call('HSET', job_key, 'unique_for', unique_for)
  end
end

-- Also returns whether other jobs wait for this one (the record's 'dependents' flag, see
-- "Dependencies" below): finalize reads both with one HMGET, so that a job nothing
-- depends on costs no more to finish than before dependencies existed. `read`: what
-- holds_lease read (fields 4 to 6), when the caller has it.
local function release_unique(job_key, id, read)
  local unique = read and {read[4], read[5], read[6]}
    or redis.call('HMGET', job_key, 'unique', 'unique_for', 'dependents')
  if unique[1] and redis.pcall('GET', unique[1]) == id then
    local window = tonumber(unique[2]) or 0
    if window > 0 then
      redis.call('PEXPIRE', unique[1], window)
    else
      redis.call('DEL', unique[1])
    end
  end
  return unique[3] ~= false
end

-- Ids finalized by this script call, published once at its end (finish_call).
local finished_ids = {}

-- Dependencies (JobConfig.depends_on). A dependent job is written 'waiting' (indexed in
-- B..'waiting') with 'deps' (the JSON array of the ids it waits for, as given), 'waits'
-- (how many of them are not final yet) and 'after' = 'any' when any final outcome of a
-- dependency will do (JobConfig.depends_on_any_outcome; absent: only 'completed').
-- Each dependency not final yet lists it in B..'dependents:'..dep_id, and carries
-- 'dependents' = '1' in its own record (so finalize looks for dependents only then,
-- see release_unique). When that
-- dependency reaches a final state, finalize settles its dependents in the same script
-- call, so no polling and no lost wake-up: completed (or any outcome, for 'after' =
-- 'any') counts one off 'waits' and the last one makes the job ready; failed or
-- cancelled cancels it, with 'error' naming the dependency, which cancels its own
-- dependents in turn (a worklist, not recursion: a chain may be thousands long).
local function dependents_key(job_prefix, id)
  return string.sub(job_prefix, 1, #job_prefix - 4) .. 'dependents:' .. id
end

-- The state of a new job's dependencies `deps` (a list of ids, deduplicated): nil and
-- the first id without a job record; else the ids not final yet (to wait for), and the
-- first id that failed or was cancelled when only completion will do (false if none)
-- with that status.
local function read_dependencies(job_prefix, deps, any_outcome)
  local unmet, doomed, doomed_status = {}, false, nil
  local seen = {}
  for _, dep in ipairs(deps) do
    local status = field_of(job_prefix .. dep, 'status')
    if not status then
      return nil, dep
    end
    -- A repeated id counts once: 'waits' must match the dependents hashes the job is in.
    if not seen[dep] then
      seen[dep] = true
      if not FINAL[status] then
        unmet[#unmet + 1] = dep
      elseif status ~= 'completed' and not any_outcome and not doomed then
        doomed, doomed_status = dep, status
      end
    end
  end
  return unmet, doomed, doomed_status
end

-- Record a new job's dependencies on its record; `unmet` from read_dependencies. The
-- caller adds it to each unmet dependency's dependents hash (add_dependents), once per
-- batch.
local function record_dependencies(job_key, deps_json, unmet, any_outcome)
  local fields = {'deps', deps_json}
  if #unmet > 0 then
    fields[#fields + 1], fields[#fields + 2] = 'waits', #unmet
  end
  if any_outcome then
    fields[#fields + 1], fields[#fields + 2] = 'after', 'any'
  end
  redis.call('HSET', job_key, unpack(fields))
end

local function add_dependents(job_prefix, unmet, ids)
  local flat = {}
  for _, id in ipairs(ids) do
    flat[#flat + 1], flat[#flat + 2] = id, '1'
  end
  for _, dep in ipairs(unmet) do
    redis.call('HSET', job_prefix .. dep, 'dependents', '1')
    for first = 1, #flat, ZADD_SLICE do
      redis.call('HSET', dependents_key(job_prefix, dep),
        unpack(flat, first, math.min(first + ZADD_SLICE - 1, #flat)))
    end
  end
end

-- Why a dependent is cancelled: stored in its 'error'.
local function dependency_reason(dep, status)
  if status == 'failed' then
    return 'dependency ' .. dep .. ' failed'
  elseif status == 'purged' then
    return 'dependency ' .. dep .. ' was purged'
  end
  return 'dependency ' .. dep .. ' was cancelled'
end

-- A waiting job whose dependencies are all settled: ready now, or scheduled until the
-- run_at its delay set at enqueue.
local function release_dependent(job_key, id, base, now)
  redis.call('ZREM', base .. 'waiting', id)
  redis.call('HDEL', job_key, 'waits')
  local run_at = tonumber(redis.call('HGET', job_key, 'run_at')) or now
  if run_at > now then
    redis.call('HSET', job_key, 'status', 'scheduled')
    redis.call('ZADD', base .. 'scheduled', int(run_at), id)
  else
    make_ready(job_key, id, base .. 'pending', base .. 'seq')
  end
  wake(base .. 'wake')
end

-- Jobs finalized in this call whose dependents are still to settle: {id, status, ttl_ms,
-- keep} each (see settle_all).
local to_settle = {}
local settling = false
local finalize
local settle_one

-- Settle the dependents of one finalized job (see "Dependencies" above); status
-- 'purged' (purge.lua) settles them as a cancel does. A dependent that is no longer
-- waiting (cancelled by hand, purged) is skipped. Cancelled dependents use the ttl and
-- count bound of the failure or cancel that caused it.
-- Settle every job in to_settle, and those their settling finalizes in turn, in order:
-- breadth first. A call made while it runs (finalize within settle_one) returns at once.
local function settle_all(job_prefix, base, now)
  if settling then
    return
  end
  settling = true
  local i = 1
  while i <= #to_settle do
    local entry = to_settle[i]
    settle_one(job_prefix, base, entry[1], entry[2], now, entry[3], entry[4])
    i = i + 1
  end
  to_settle = {}
  settling = false
end

settle_one = function(job_prefix, base, id, status, now, ttl_ms, keep)
  local key = dependents_key(job_prefix, id)
  -- pcall: a key damaged by hand (not a hash) settles nothing, rather than failing the
  -- script after the job was finalized.
  local flat = redis.pcall('HGETALL', key)
  if type(flat) ~= 'table' or flat.err or #flat == 0 then
    return
  end
  redis.call('DEL', key)
  local waiting = {}
  for i = 1, #flat, 2 do
    waiting[#waiting + 1] = flat[i]
  end
  -- In id order, not the hash's: which dependency a cancelled job names, and which
  -- records a count bound drops, must not depend on how Redis encodes the hash.
  table.sort(waiting)
  for _, dependent in ipairs(waiting) do
    local job_key = job_prefix .. dependent
    local fields = redis.pcall('HMGET', job_key, 'status', 'after')
    if type(fields) == 'table' and not fields.err and fields[1] == 'waiting' then
      if status == 'completed' or fields[2] == 'any' then
        if bump(job_key, 'waits', -1) <= 0 then
          release_dependent(job_key, dependent, base, now)
        end
      else
        redis.call('ZREM', base .. 'waiting', dependent)
        redis.call('HSET', job_key, 'error', dependency_reason(id, status))
        finalize(job_prefix, dependent, 'cancelled', now, ttl_ms, base .. 'cancelled',
          base .. 'stats', keep)
      end
    end
  end
end

-- The counts, index entries and index trims of the jobs a script call finalizes, written
-- once at the call's end (finish_call) rather than once per job: a batch of completions
-- then costs one HINCRBY of each counter and one ZADD of its index, not one per job.
-- `indexes`: index key -> {flat score/id pairs to add, age cutoff, count bound (0: none)}.
-- The bound applied once to the whole batch leaves what applying it after each job would
-- (the newest `keep` by score, then id), and drops the same records.
local call_totals = {stats = nil, now = nil, counts = {}, indexes = {}}

-- Move a job to a final state: index it, count it, expire its record, trim the index;
-- then settle the jobs that wait for it (settle_one).
-- keep = 0 means no count bound (completed jobs are bounded by age only).
-- `read`: holds_lease's fields, when the caller has them (release_unique needs no read
-- of its own then); `fields`: more fields to write with the status.
finalize = function(job_prefix, id, status, now, ttl_ms, index_key, stats_key, keep, read,
                    fields)
  local job_key = job_prefix .. id
  finished_ids[#finished_ids + 1] = id
  local awaited = release_unique(job_key, id, read)
  local at = whole(now)
  if fields then
    redis.call('HSET', job_key, 'status', status, 'completed_at', at, unpack(fields))
  else
    redis.call('HSET', job_key, 'status', status, 'completed_at', at)
  end
  redis.call('HDEL', job_key, 'lease')
  redis.call('PEXPIRE', job_key, whole(ttl_ms))
  call_totals.stats, call_totals.now = stats_key, now
  call_totals.counts[status] = (call_totals.counts[status] or 0) + 1
  -- Expired records vanish by themselves; only their index entries need removing (before
  -- a count bound is applied: an expired entry must not count against it).
  local cutoff = now - ttl_ms
  local index = call_totals.indexes[index_key]
  if not index then
    index = {{}, cutoff, keep}
    call_totals.indexes[index_key] = index
  end
  local flat = index[1]
  flat[#flat + 1], flat[#flat + 2] = at, id
  index[2] = math.max(index[2], cutoff)
  if keep > 0 and (index[3] == 0 or keep < index[3]) then
    index[3] = keep
  end
  if awaited then
    to_settle[#to_settle + 1] = {id, status, ttl_ms, keep}
    settle_all(job_prefix, base_of(stats_key, 'stats'), now)
  end
end

-- A waiting job leaves its dependencies' dependents hashes (cancel.lua): they need not
-- remember it.
local function forget_dependencies(job_prefix, job_key, id)
  local ok, deps = pcall(cjson.decode, field_of(job_key, 'deps') or '[]')
  if ok and type(deps) == 'table' then
    for _, dep in ipairs(deps) do
      redis.pcall('HDEL', dependents_key(job_prefix, dep), id)
    end
  end
end

-- The end of every script call that may finalize jobs: write their counts, index entries
-- and trims (see `call_totals`), and tell the processes blocked in Client.wait which jobs just
-- finished: one PUBLISH per script call, whatever the batch size (free when nobody
-- listens). A waiter that misses it (its connection dropped) re-reads the status of
-- what it waits for on reconnecting.
local function finish_call(job_prefix)
  if call_totals.stats then
    local base = base_of(call_totals.stats, 'stats')
    for status, n in pairs(call_totals.counts) do
      tally(call_totals.stats, status, n)
      count_minute(base, call_totals.now, status, n)
    end
    redis.pcall('HSET', call_totals.stats, 'last_processed', call_totals.now)
    call_totals.stats, call_totals.counts = nil, {}
  end
  for index_key, index in pairs(call_totals.indexes) do
    zadd_all(index_key, index[1])
    redis.call('ZREMRANGEBYSCORE', index_key, '-inf', '(' .. int(index[2]))
    local keep = index[3]
    if keep > 0 then
      local excess = redis.call('ZCARD', index_key) - keep
      if excess > 0 then
        del_records(job_prefix, redis.call('ZRANGE', index_key, 0, excess - 1))
        redis.call('ZREMRANGEBYRANK', index_key, 0, excess - 1)
      end
    end
  end
  call_totals.indexes = {}
  if #finished_ids > 0 then
    local channel = string.sub(job_prefix, 1, #job_prefix - 4) .. 'finished'
    -- pcall: a user whose ACL does not allow PUBLISH on the channel must not see the
    -- script fail after its writes; its waiters still re-read every RECHECK seconds.
    redis.pcall('PUBLISH', channel, cjson.encode(finished_ids))
  end
end

-- The fence: may the holder of `token` still change this job? Also returns the job's
-- concurrency slot (its type, or false: see give_slot) and, when held, what finalize
-- reads (its `read` argument), all in the same call.
-- (A key that is not a hash holds no lease: HMGET's error reply has no fields.)
-- More fields to read (`...`) come after those six, in the same HMGET.
local function holds_lease(job_key, token, ...)
  local fields = redis.pcall('HMGET', job_key, 'status', 'lease', 'slot', 'unique',
    'unique_for', 'dependents', ...)
  -- The last three are for finalize (release_unique), when the holder ends the job.
  return fields[1] == 'processing' and fields[2] == token, fields[3] or false, fields
end

local function earliest(zset_key)
  local first = redis.call('ZRANGE', zset_key, 0, 0, 'WITHSCORES')
  if first[2] then
    return tonumber(first[2])
  end
  return -1
end

-- Flow control: rate limits and concurrency caps per job type ----------------------------
--
-- Keys (B as above):
--   B..'limits'       hash  job type -> 'count period_ms cap' (0: no such limit); written
--                           by limits.lua (worker pools publish their declarations, with
--                           the queue's overrides applied)
--   B..'rate'         hash  job type -> the next start time its rate allows (GCRA's
--                           theoretical arrival time, ms, fractional)
--   B..'running:'..t  zset  ids of type t that hold one of its concurrency slots, score =
--                           the lease deadline (heartbeats extend it, like the lease)
--   B..'parked:'..t   zset  ready ids of type t held back by its limits, score = their
--                           ready_score (order kept); their status stays 'pending'
--   B..'parked'       zset  types with parked ids, score = when fetch looks at them again
--                           (0 once a slot was given back: at the next fetch)
--
-- Why parked lists: a limited type's ready jobs leave the pending index when fetch meets
-- them over their limit, so that no later fetch walks past them again (each waiting job
-- is moved at most once per time it is held back), and an idle pool is not woken by
-- jobs it may not take. Fetch moves them back, in their old places, once the type may
-- start jobs again, as many as it may start.
--
-- The rate is GCRA (a token bucket kept as one timestamp): starts are spaced by
-- period / count, with a burst of up to max(1, floor(count / 10)) after a pause, so any
-- window of one period sees at most count + burst - 1 starts and a long run exactly the
-- rate. A slot is counted from the lease (fetch) to the job leaving 'processing' by any
-- path: complete, fail or retry, cancel, requeue, reap (give_slot); an entry whose
-- deadline passed without a reap (its record deleted) no longer counts.

local FLOW_UNPARK = 1000  -- parked ids moved back per type and fetch, at most
-- When a type held back by a full cap is looked at again if nothing wakes it first. A
-- slot given back wakes it at once (give_slot), and so does a reap that finds a job's
-- record gone (flow_record_gone), the one way a slot can go without being given back:
-- so this is only a backstop, and no pool polls a full cap.
local FLOW_RECHECK = 3600000

-- The limits of the queue's job types, or nil when no type has any (the common case:
-- one HGETALL of an empty hash is all flow control then costs a fetch).
local function flow_limits(base)
  local flat = redis.pcall('HGETALL', base .. 'limits')
  if type(flat) ~= 'table' or flat.err or #flat == 0 then
    return nil
  end
  local limits, any = {}, false
  for i = 1, #flat, 2 do
    local count, period, cap = string.match(flat[i + 1], '^(%d+) (%d+) (%d+)$')
    if count then
      count, period, cap = tonumber(count), tonumber(period), tonumber(cap)
      local lim = {cap = cap}
      if count > 0 and period > 0 then
        lim.interval = period / count
        lim.tolerance = (math.max(1, math.floor(count / 10)) - 1) * lim.interval
      end
      if lim.interval or cap > 0 then
        limits[flat[i]] = lim
        any = true
      end
    end
  end
  if any then
    return limits
  end
  return nil
end

local function flow_tat(base, t, now)
  return math.max(tonumber(field_of(base .. 'rate', t)) or now, now)
end

-- How many jobs of type t may start now (at most `want`), and, for each limit that this
-- many starts would exhaust, when the next start is allowed: the latest of those (ms), or
-- nil. For a full cap that is FLOW_RECHECK from now: a slot given back wakes the type
-- (give_slot). A slot whose deadline passed without a reap (its record was deleted)
-- counts no more.
local function flow_room(base, t, lim, now, want)
  local free, tokens, tat = math.huge, math.huge, nil
  if lim.cap > 0 then
    local running = base .. 'running:' .. t
    redis.call('ZREMRANGEBYSCORE', running, '-inf', '(' .. int(now))
    free = math.max(lim.cap - redis.call('ZCARD', running), 0)
  end
  if lim.interval then
    tat = flow_tat(base, t, now)
    tokens = math.max(math.floor((now + lim.tolerance - tat) / lim.interval) + 1, 0)
  end
  local room = math.min(want, free, tokens)
  local at = nil
  -- Only the limits that `room` starts use up name a time.
  if free <= room then
    at = now + FLOW_RECHECK
  end
  if tokens <= room then
    at = math.max(at or 0, math.ceil(tat + tokens * lim.interval - lim.tolerance))
  end
  return room, at
end

-- Start one job of type t: use its rate, take a slot (recorded in the job's 'slot').
local function flow_take(base, t, lim, job_key, id, now, deadline)
  if lim.interval then
    local rate = base .. 'rate'
    local value = string.format('%.3f', flow_tat(base, t, now) + lim.interval)
    if type(redis.pcall('HSET', rate, t, value)) == 'table' then
      redis.call('DEL', rate)  -- not a hash: damaged, only timing state is lost
      redis.call('HSET', rate, t, value)
    end
  end
  if lim.cap > 0 then
    redis.call('ZADD', base .. 'running:' .. t, deadline, id)
    redis.call('HSET', job_key, 'slot', t)
  end
end

-- Hold a ready job of type t back until `at` (ms).
local function flow_park(base, t, id, score, at)
  redis.call('ZADD', base .. 'parked:' .. t, score, id)
  redis.call('ZADD', base .. 'parked', int(at), t)
end

-- Move parked jobs whose type may start jobs again back to pending. Returns the
-- earliest time a type still parked is looked at again (ms), or -1.
local function flow_unpark(base, limits, pending, now)
  local due = redis.call('ZRANGEBYSCORE', base .. 'parked', '-inf', now, 'LIMIT', 0, 100)
  for _, t in ipairs(due) do
    local key = base .. 'parked:' .. t
    local lim = limits and limits[t]
    local room, at = FLOW_UNPARK, nil
    if lim then
      room, at = flow_room(base, t, lim, now, FLOW_UNPARK)
    end
    if room > 0 then
      local moved = redis.call('ZPOPMIN', key, room)
      local adds = {}
      for i = 1, #moved, 2 do
        adds[#adds + 1], adds[#adds + 2] = moved[i + 1], moved[i]
      end
      if #adds > 0 then
        redis.call('ZADD', pending, unpack(adds))
      end
    end
    if redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', base .. 'parked', t)
    else
      redis.call('ZADD', base .. 'parked', int(at or now), t)
    end
  end
  return earliest(base .. 'parked')
end

-- A job left 'processing' (by whatever path): give its slot back, and have the next
-- fetch look at its type's parked jobs at once. `slot`: the record's 'slot' field when
-- the caller has read it already (holds_lease), else nil to read it here.
local function give_slot(job_prefix, job_key, id, slot)
  local t = slot
  if t == nil then
    t = field_of(job_key, 'slot')
  end
  if t then
    local base = base_of(job_prefix, 'job:')
    redis.pcall('ZREM', base .. 'running:' .. t, id)
    redis.call('HDEL', job_key, 'slot')
    if redis.call('EXISTS', base .. 'parked:' .. t) == 1 then
      redis.call('ZADD', base .. 'parked', 0, t)
      wake(base .. 'wake')
    end
  end
end

-- A heartbeat extended a job's lease: its slot (as holds_lease read it) lasts as long.
local function extend_slot(job_prefix, id, deadline, t)
  if t then
    redis.pcall('ZADD', base_of(job_prefix, 'job:') .. 'running:' .. t, deadline, id)
  end
end

-- A reap met a leased job whose record is gone (deleted by hand) or is no record at all
-- (set aside): its slot, if it held one, cannot be given back by name, and its deadline
-- has passed, so every held-back type is looked at again by the next fetch (flow_room
-- drops the slot then).
local function flow_record_gone(job_prefix)
  local parked = base_of(job_prefix, 'job:') .. 'parked'
  local types = redis.call('ZRANGE', parked, 0, -1)
  for _, t in ipairs(types) do
    redis.call('ZADD', parked, 0, t)
  end
  return #types > 0
end

-- A pending job left the queue another way than fetch (cancel): out of its parked list.
local function flow_unready(job_prefix, job_key, id)
  local t = field_of(job_key, 'type')
  if t then
    local base = base_of(job_prefix, 'job:')
    if redis.call('ZREM', base .. 'parked:' .. t, id) == 1
        and redis.call('EXISTS', base .. 'parked:' .. t) == 0 then
      redis.call('ZREM', base .. 'parked', t)
    end
  end
end
