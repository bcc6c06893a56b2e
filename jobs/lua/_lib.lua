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
--                           retried, lost_leases, rejected, last_processed)
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
--   B..'finished'     pub/sub channel (not a key): a JSON array of the ids that reached
--                     a final state in one script call (see announce_finished)
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

-- Add `by` to a counter of a job record. A value that is not a number (a record damaged
-- by hand or by another tool) counts as 0: HINCRBY would abort the script half way,
-- after jobs were already taken out of one index and before they reached the next.
local function bump(job_key, field, by)
  local value = (tonumber(redis.call('HGET', job_key, field)) or 0) + by
  redis.call('HSET', job_key, field, int(value))
  return value
end

-- Strict priority, FIFO within a priority: priority in the high part (higher priority =
-- lower score), a per-queue sequence below. (1000 - p) * 2^42 + seq stays exact in a
-- double for p in -1000..1000 and 4.4e12 sequence numbers.
local function ready_score(priority, seq)
  return (1000 - tonumber(priority)) * 4398046511104 + seq
end

-- One marker is enough: the pool that takes it re-arms it when work remains (fetch.lua).
local function wake(wake_key)
  if redis.call('LLEN', wake_key) == 0 then
    redis.call('RPUSH', wake_key, '1')
  end
end

-- Write a new job record; false when `check` and the id already exists, so that a
-- deterministic id (a cron fire) enqueues at most once. The job's index entry is appended to `adds` (adds.pending / adds.scheduled:
-- flat score, member lists) for `flush_adds`, so that a batch costs one ZADD per index.
-- Fields at their default are left out (a missing attempts/failures/lost is 0, a
-- missing timeout_ms is none, missing metadata is {}, a missing backoff is the default
-- exponential one): less to write, and less memory per waiting job.
local function add_job(job_prefix, adds, now, seq, id, job_type, payload, priority,
                       max_retries, timeout_ms, backoff, metadata, delay, check)
  local job_key = job_prefix .. id
  if check and redis.call('EXISTS', job_key) == 1 then
    return false
  end
  local score = int(ready_score(priority, seq))
  local status, run_at, index = 'pending', now, adds.pending
  delay = tonumber(delay)
  if delay > 0 then
    status, run_at, index = 'scheduled', now + delay, adds.scheduled
    index[#index + 1], index[#index + 2] = run_at, id
  else
    index[#index + 1], index[#index + 2] = score, id
  end
  local fields = {'id', id, 'type', job_type, 'payload', payload, 'status', status,
    'priority', priority, 'max_retries', max_retries, 'created_at', now, 'run_at', run_at,
    'score', score}
  if backoff ~= '' then
    fields[#fields + 1], fields[#fields + 2] = 'backoff', backoff
  end
  if timeout_ms ~= '' then
    fields[#fields + 1], fields[#fields + 2] = 'timeout_ms', timeout_ms
  end
  if metadata ~= '{}' then
    fields[#fields + 1], fields[#fields + 2] = 'metadata', metadata
  end
  redis.call('HSET', job_key, unpack(fields))
  return true
end

-- Per-minute history, so that rates over the last hour read in O(60) with no metrics
-- server. One HINCRBY per count; the expiry is set only by the first count of a field in
-- a minute, always to the same moment (PEXPIRE, not PEXPIREAT: one ACL permission less).
local HISTORY_MINUTES = 61

local function count_minute(base, now, field, by)
  local minute = math.floor(now / 60000)
  local key = base .. 'history:' .. int(minute)
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

local function flush_adds(pending, scheduled, adds, now)
  if #adds.pending > 0 then
    redis.call('ZADD', pending, unpack(adds.pending))
  end
  if #adds.scheduled > 0 then
    redis.call('ZADD', scheduled, unpack(adds.scheduled))
  end
  local added = (#adds.pending + #adds.scheduled) / 2
  if added > 0 then
    count_minute(base_of(pending, 'pending'), now, 'enqueued', added)
  end
end

-- Make a job ready to run: a fresh FIFO position within its priority.
local function make_ready(job_key, id, pending_key, seq_key)
  -- A damaged priority counts as 0 (see bump); the worker then fails the job by name.
  local priority = tonumber(redis.call('HGET', job_key, 'priority')) or 0
  local score = ready_score(priority, redis.call('INCR', seq_key))
  redis.call('ZADD', pending_key, int(score), id)
  redis.call('HSET', job_key, 'status', 'pending', 'score', int(score))
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
end

-- Move a job to a final state: index it, count it, expire its record, trim the index.
-- keep = 0 means no count bound (completed jobs are bounded by age only).
-- Ids finalized by this script call, published once at its end (announce_finished).
local finished_ids = {}

local function finalize(job_prefix, id, status, now, ttl_ms, index_key, stats_key, keep)
  local job_key = job_prefix .. id
  finished_ids[#finished_ids + 1] = id
  redis.call('HSET', job_key, 'status', status, 'completed_at', now)
  redis.call('HDEL', job_key, 'lease')
  redis.call('PEXPIRE', job_key, ttl_ms)
  redis.call('ZADD', index_key, now, id)
  redis.call('HINCRBY', stats_key, status, 1)
  redis.call('HSET', stats_key, 'last_processed', now)
  count_minute(base_of(stats_key, 'stats'), now, status, 1)
  -- Expired records vanish by themselves; only their index entries need removing.
  redis.call('ZREMRANGEBYSCORE', index_key, '-inf', '(' .. int(now - ttl_ms))
  if keep > 0 then
    local excess = redis.call('ZCARD', index_key) - keep
    if excess > 0 then
      local old = redis.call('ZRANGE', index_key, 0, excess - 1)
      for _, old_id in ipairs(old) do
        redis.call('DEL', job_prefix .. old_id)
      end
      redis.call('ZREMRANGEBYRANK', index_key, 0, excess - 1)
    end
  end
end

-- Tell the processes blocked in Client.wait which jobs just finished: one PUBLISH per
-- script call, whatever the batch size (free when nobody listens). A waiter that misses
-- it (its connection dropped) re-reads the status of what it waits for on reconnecting.
local function announce_finished(job_prefix)
  if #finished_ids > 0 then
    local channel = string.sub(job_prefix, 1, #job_prefix - 4) .. 'finished'
    redis.call('PUBLISH', channel, cjson.encode(finished_ids))
  end
end

-- The fence: may the holder of `token` still change this job?
local function holds_lease(job_key, token)
  local fields = redis.call('HMGET', job_key, 'status', 'lease')
  return fields[1] == 'processing' and fields[2] == token
end

local function earliest(zset_key)
  local first = redis.call('ZRANGE', zset_key, 0, 0, 'WITHSCORES')
  if first[2] then
    return tonumber(first[2])
  end
  return -1
end
