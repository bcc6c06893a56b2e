-- fetch.lua: promote due jobs, then pop up to N of the best ready jobs and lease them,
-- all in one atomic call.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] processing   KEYS[4] seq
-- KEYS[5] lease_seq   KEYS[6] wake   KEYS[7] this request's record (B..'req:'..ARGV[5])
-- KEYS[8] stats
-- ARGV[1] job key prefix   ARGV[2] N (max jobs)   ARGV[3] lease_ms
-- ARGV[4] max due jobs to promote in this call
-- ARGV[5] the request id: random, made by the caller for one logical fetch and kept when
--         that fetch is sent again. It is part of every lease token the request gets (the
--         lease_seq counter alone could repeat after a failover to a replica that had not
--         seen its last increments, and a token must never be handed out twice), and it
--         makes the fetch idempotent (below).
-- ARGV[6] how long the request's record lives (ms): a bit more than lease_ms
-- Returns {now_ms, next_event_ms, more, jobs} where more is 1 when ready jobs are left
-- after this fetch (a backlog), else 0, and jobs (absent when none was leased) is one
-- JSON array holding, for each job, the array of its record's values in the order of
-- FIELDS below (jobs._codec.FETCHED_FIELDS; missing ones false), with
-- status processing, attempts + 1 and a fresh lease token in 'lease'; and
-- next_event_ms is when the earliest scheduled job is due, or the earliest time a job
-- type held back by its limits may start jobs again, whichever comes first (-1 if
-- neither): an idle pool may block until then. (Expired leases are returned to pending
-- by reap.lua, and slots given back by give_slot, both of which wake.)
--
-- Flow control (rate limits and concurrency caps per job type, see _lib.lua): a popped
-- job whose type may not start one more job now is parked (out of pending, in its type's
-- parked list, status still 'pending', no attempt counted) and the fetch goes on with the
-- next ready jobs, so a limited type never holds up the others. Before popping, parked
-- jobs of types that may start again are moved back to their old places in pending.
--
-- Strict priority, FIFO within a priority (ready_score). A popped id whose record is
-- gone (deleted by hand, or a corrupt queue) is dropped rather than leased; one whose key
-- is not a hash is set aside (set_aside in _lib.lua), as is a due one (promote_due).
--
-- Idempotent per request: the reply to a fetch can be lost after the script ran (a reset,
-- a failover, a stall past the client's socket timeout), and the command is sent again
-- (by redis-py's retries, where the client has them, and after a packed call's lost
-- connection by `execute_after_loss`); a worker pool also tries a failed fetch again
-- with the same request id. A fetch that leased something records what (KEYS[7], a
-- hash: id -> the number of its token; a small zset would cost twice as much, sorting
-- each in), and a request seen before leases nothing new: it returns the jobs its first
-- run leased that still hold those tokens, whatever N, with their leases renewed (the
-- caller has just learnt of them). The record expires with the leases it describes.

local pending, scheduled, processing = KEYS[1], KEYS[2], KEYS[3]
local seq_key, lease_seq, wake_key, request = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local stats = KEYS[8]
local job_prefix, n, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local request_id, request_ttl = ARGV[5], tonumber(ARGV[6])
local now = now_ms()
-- Values only, in a fixed order: no field names to send or to parse for every job.
local FIELDS = {'id', 'type', 'payload', 'status', 'priority', 'max_retries', 'timeout_ms',
  'backoff', 'metadata', 'created_at', 'run_at', 'started_at', 'completed_at', 'attempts',
  'failures', 'lost', 'error', 'result', 'lease', 'deps'}

-- Positions in FIELDS of what a lease changes.
local STATUS, STARTED_AT, ATTEMPTS, LEASE = 4, 12, 14, 19

local out = {now, -1, 0}
local base = base_of(job_prefix, 'job:')
-- Flow control state (see _lib.lua): nil/false while no type is limited or held back.
local limits, flow = nil, true
local deadline = now + lease_ms
-- What every job leased in this call is written with, as text made once (whole()).
local now_text, deadline_text = whole(now), whole(deadline)

-- The jobs' values, encoded as one JSON array at the end (absent fields false): a worker
-- parses one reply element per call, in C, instead of one per field (most of its CPU
-- time in a short-job drain, once) or one per job.
local delivered = {}
local function deliver(job_key)
  delivered[#delivered + 1] = redis.call('HMGET', job_key, unpack(FIELDS))
end

local recorded = redis.call('HGETALL', request)
if #recorded > 0 then
  -- This request ran before and its reply was lost: the same jobs, nothing new, in the
  -- order they were leased (a large hash keeps no order).
  local again = {}
  for i = 1, #recorded, 2 do
    again[#again + 1] = {tonumber(recorded[i + 1]), recorded[i], recorded[i + 1]}
  end
  table.sort(again, function(a, b) return a[1] < b[1] end)
  for _, entry in ipairs(again) do
    local id = entry[2]
    local job_key = job_prefix .. id
    if holds_lease(job_key, request_id .. ':' .. entry[3]) then
      redis.call('ZADD', processing, 'XX', deadline_text, id)
      deliver(job_key)
    end
  end
  redis.call('PEXPIRE', request, request_ttl)
else
  promote_due(job_prefix, scheduled, pending, seq_key, stats, now, tonumber(ARGV[4]))
  -- One O(1) command while no type is limited or held back (the common case).
  flow = redis.call('EXISTS', base .. 'limits', base .. 'parked') > 0
  if flow then
    limits = flow_limits(base)
    flow_unpark(base, limits, pending, now)
  end

  local leased, recorded_any, taken, held_back = {}, false, 0, 0
  -- Into processing with one ZADD for the whole call (deadline, id pairs).
  local deadlines = {}
  -- Jobs held back by their type's limits do not count towards N: pop on past them
  -- (each is parked once, so this ends), but no more than FLOW_UNPARK per call.
  while taken < n and held_back < FLOW_UNPARK do
    local popped = redis.call('ZPOPMIN', pending, n - taken)
    local count = #popped / 2
    if count == 0 then
      break
    end
    local token = take(lease_seq, count) - count
    for i = 1, #popped, 2 do
      local id = popped[i]
      local job_key = job_prefix .. id
      -- One read for the checks and the reply (patched below with what the lease
      -- writes): 3 commands a job with the HSET and the ZADD. A record without its 'id',
      -- or a key that is not a hash (HMGET's error reply), is looked at more closely.
      local values = redis.pcall('HMGET', job_key, unpack(FIELDS))
      local kind = 'hash'
      if values.err or not values[1] then
        kind = record_type(job_key)
      end
      local t = limits and kind == 'hash' and values[2]
      local lim = t and limits[t]
      local room, at = 1, nil
      if lim then
        room, at = flow_room(base, t, lim, now, 1)
      end
      if kind ~= 'hash' and kind ~= 'none' then
        set_aside(stats, job_key, kind)
      elseif kind == 'hash' and room < 1 then
        flow_park(base, t, id, popped[i + 1], at)
        held_back = held_back + 1
      elseif kind == 'hash' then
        if lim then
          flow_take(base, t, lim, job_key, id, now, deadline)
        end
        token = token + 1
        taken = taken + 1
        -- A damaged count restarts from 0 (as bump in _lib.lua does); one that is not
        -- whole, or past what whole()'s C long holds exactly, is printed by int().
        local attempts = (tonumber(values[ATTEMPTS]) or 0) + 1
        attempts = attempts % 1 == 0 and attempts < 2^53 and whole(attempts) or int(attempts)
        local number = whole(token)
        local lease = request_id .. ':' .. number
        -- 'id' again: a record that lost it would otherwise reach the worker nameless.
        redis.call('HSET', job_key, 'id', id, 'status', 'processing', 'started_at', now_text,
          'lease', lease, 'attempts', attempts)
        deadlines[#deadlines + 1], deadlines[#deadlines + 2] = deadline_text, id
        leased[#leased + 1], leased[#leased + 2] = id, number
        recorded_any = true
        values[1], values[STATUS], values[STARTED_AT] = id, 'processing', now_text
        values[ATTEMPTS], values[LEASE] = attempts, lease
        delivered[#delivered + 1] = values
        -- In slices: unpack() has a bound, and a pool may fetch thousands at once.
        if #leased >= 1000 then
          redis.call('HSET', request, unpack(leased))
          leased = {}
        end
      end
    end
    if not limits then
      break  -- nothing held back: one pop took what there was
    end
  end
  if #leased > 0 then
    redis.call('HSET', request, unpack(leased))
  end
  if #deadlines > 0 then
    zadd_all(processing, deadlines)
  end
  if recorded_any then
    redis.call('PEXPIRE', request, request_ttl)
  end
end

-- More work than this pool can take: pass the wake-up on to the next idle pool.
if redis.call('ZCARD', pending) > 0 then
  wake(wake_key)
  out[3] = 1
end

if #delivered > 0 then
  out[4] = cjson.encode(delivered)
end

out[2] = earliest(scheduled)
-- A pool with nothing to do sleeps until then: the earliest due job, or the earliest
-- time a held-back type may start jobs again.
local parked_at = flow and earliest(base .. 'parked') or -1
if parked_at >= 0 and (out[2] < 0 or parked_at < out[2]) then
  out[2] = math.max(parked_at, now)
end
return out
