-- enqueue.lua: add one or many jobs atomically; an id that already exists is left alone.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] stats   KEYS[5] wake
-- ARGV[1] job key prefix (B..'job:')
-- ARGV[2..8] the batch's settings: type, priority, max_retries, timeout_ms ('' = none),
--           backoff (JSON spec), metadata (JSON), delay_ms
-- ARGV[9] the unique key's full name (B..'unique:'..key), '' for none
-- ARGV[10] unique_for_ms: how long the key stays taken after the job finished
-- ARGV[11..] 2 values per job: id, payload (JSON)
-- Returns {now_ms, created_1, ..., created_n}: 1 written, 0 the id already existed, or
-- the id of the job that holds the unique key (nothing written).
-- Scheduled jobs due by now are made ready first (promote_due in _lib.lua), so that they
-- keep their place ahead of these in FIFO order.
--
-- Record fields written (add_job in _lib.lua): id type payload status priority
-- max_retries timeout_ms backoff metadata created_at run_at score (attempts, failures and
-- lost appear once they are not 0). Later scripts add started_at, completed_at, lease,
-- error, traceback, result, written_by.

local pending, scheduled, seq_key, stats, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_prefix = ARGV[1]
local now = now_ms()
local out = {now}
local created = 0
local n = (#ARGV - 10) / 2
local unique, unique_for = ARGV[9], ARGV[10]
-- Jobs due by now are ready before these (see promote_due).
local promoted = promote_due(job_prefix, scheduled, pending, seq_key, stats, now, PROMOTE_ON_WRITE)
-- One INCRBY for the whole batch keeps FIFO order and saves a call per job.
local seq = take(seq_key, n) - n

local adds = {pending = {}, scheduled = {}}
for b = 11, #ARGV, 2 do
  seq = seq + 1
  local holder = unique ~= '' and unique_holder(unique, job_prefix, now)
  if holder then
    out[#out + 1] = holder
  elseif add_job(job_prefix, adds, now, seq, ARGV[b], ARGV[2], ARGV[b + 1], ARGV[3], ARGV[4],
                 ARGV[5], ARGV[6], ARGV[7], ARGV[8], true) then
    if unique ~= '' then
      take_unique(unique, job_prefix .. ARGV[b], ARGV[b], unique_for)
    end
    created = created + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
flush_adds(pending, scheduled, adds)

if created > 0 then
  tally(stats, 'total', created)
end
if created > 0 or promoted > 0 then
  -- Also for delayed jobs: an idle pool must learn the new earliest due time.
  wake(wake_key)
end
return out
