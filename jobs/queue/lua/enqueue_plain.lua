-- enqueue_plain.lua: enqueue.lua for jobs with no unique key and no dependencies, the
-- common case, in a script that carries none of their code. Redis runs a script's whole
-- text at every call, so the unique-key and dependency helpers enqueue.lua needs (and
-- what they reach: finalize, the flow limits ...) cost every plain enqueue about a third
-- of its server time. Writes exactly what enqueue.lua writes for such jobs.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] stats   KEYS[5] wake
-- KEYS[6] types (job type -> its declared settings, published by worker pools)
-- ARGV[1] job key prefix (B..'job:')
-- ARGV[2..8] the batch's settings, as enqueue.lua's: type, priority, max_retries,
--           timeout_ms ('' = none), backoff (JSON spec), metadata (JSON), delay_ms
-- ARGV[9] the settings left at the library default (letters of 'prtb', see enqueue.lua)
-- ARGV[10] '1': refuse a type no worker pool declared, else '0'
-- ARGV[11] '1': the ids are fresh (drawn at random by the producer for this call), so
--           one exists only if this very call ran before and its reply was lost: then
--           the first or the last id exists, and nothing is written. One EXISTS a call
--           instead of one a job (a script runs whole or not at all). '0': each id is
--           checked.
-- ARGV[12..] 2 values per job: id, payload (JSON)
-- Returns how many jobs it wrote (an id that already existed is left alone and not
-- counted), or the UNKNOWN_TYPE error reply. One integer, not enqueue.lua's flag per job:
-- without a unique key every job's id is its own either way, and the smallest reply is
-- the cheapest for the producer to read.

local pending, scheduled, seq_key, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_prefix, job_type = ARGV[1], ARGV[2]
local fresh = ARGV[11] == '1'
local last = #ARGV
if fresh and last > 11 and
    redis.call('EXISTS', job_prefix .. ARGV[12], job_prefix .. ARGV[last - 1]) > 0 then
  return 0  -- this call again: it wrote its jobs the first time
end
local now = now_ms()
local priority, max_retries, timeout_ms, backoff = declared_settings(KEYS[6], job_type,
  ARGV[9], ARGV[10] == '1', ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if not priority then
  return redis.error_reply('UNKNOWN_TYPE no worker pool declared job type ' .. job_type)
end
-- Jobs due by now are ready before these (see promote_due).
local promoted = promote_due(job_prefix, scheduled, pending, seq_key, stats, now, PROMOTE_ON_WRITE)
local n = (last - 11) / 2
local seq = take(seq_key, n) - n
-- add_job's record, with what every job of the call shares worked out once: its cost is
-- paid per job, and a call of 1,000 jobs spent more time in it than in the HSETs.
-- Numbers as text made once (whole() in _lib.lua): redis.call would print each, per job.
local delay = tonumber(ARGV[8])
local now_text = whole(now)
local status, run_at, index_key = 'pending', now_text, pending
if delay > 0 then
  status, run_at, index_key = 'scheduled', whole(now + delay), scheduled
end
local optional = optional_fields({}, delay, run_at, backoff, timeout_ms, ARGV[7])
local band = ready_score(priority, 0)
local index = {}
for b = 12, #ARGV, 2 do
  seq = seq + 1
  local id = ARGV[b]
  local job_key = job_prefix .. id
  if fresh or redis.call('EXISTS', job_key) == 0 then
    local score = whole(band + seq)
    redis.call('HSET', job_key, 'id', id, 'type', job_type, 'payload', ARGV[b + 1],
      'status', status, 'priority', priority, 'max_retries', max_retries,
      'created_at', now_text, 'score', score, unpack(optional))
    index[#index + 1], index[#index + 2] = delay > 0 and run_at or score, id
  end
end
local created = #index / 2
if created > 0 then
  zadd_all(index_key, index)
  tally(stats, 'total', created)
  count_minute(base_of(pending, 'pending'), now, 'enqueued', created)
end
if created > 0 or promoted > 0 then
  wake(KEYS[5])
end
return created
