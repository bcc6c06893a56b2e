-- complete.lua: record one or many successful attempts, each fenced by its lease token.
--
-- KEYS[1] processing   KEYS[2] completed   KEYS[3] stats
-- ARGV[1] job key prefix   ARGV[2] completed_ttl_ms
-- ARGV[3] max completed records kept (0: no bound)
-- ARGV[4..] 3 values per job: id, lease token, result (JSON)
-- Returns {now_ms, codes}: codes has one character per job (one reply element for the
-- whole call, as the worker parses replies in Python): '1' recorded (now, or by this
-- same write sent earlier: 'written_by' holds 'c:' or 'f:' and the token of the write
-- that last recorded an outcome); '0' rejected because the caller no longer holds the
-- lease (it expired and the job moved on, or the job was cancelled). Rejections are
-- counted in stats 'rejected' and change nothing else.
-- A recorded job gives its concurrency slot back (give_slot in _lib.lua).
--
-- Past the count bound, the call drops the oldest completed records, at most twice as
-- many as it recorded: one ZCARD a call, and the bound holds however fast jobs complete
-- (reap.lua's slices catch up a backlog, e.g. after the bound was lowered).

local processing, completed, stats = KEYS[1], KEYS[2], KEYS[3]
local job_prefix, ttl, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local codes = {}
local recorded = 0
-- Out of processing with one ZREM for the whole call (nothing below reads it).
local leaving = {}

for b = 4, #ARGV, 3 do
  local id = ARGV[b]
  local job_key = job_prefix .. id
  local token = ARGV[b + 1]
  local held, slot, read = holds_lease(job_key, token)
  if held then
    leaving[#leaving + 1] = id
    give_slot(job_prefix, job_key, id, slot)
    finalize(job_prefix, id, 'completed', now, ttl, completed, stats, 0, read,
      {'result', ARGV[b + 2], 'written_by', 'c:' .. token})
    recorded = recorded + 1
    codes[#codes + 1] = '1'
  elseif field_of(job_key, 'written_by') == 'c:' .. token then
    -- This very write, sent again after its reply was lost: it is recorded.
    codes[#codes + 1] = '1'
  else
    tally(stats, 'rejected', 1)
    codes[#codes + 1] = '0'
  end
end
zrem_all(processing, leaving)
-- (Adds the completed index's entries, and trims by age first: expired entries count for
-- nothing.)
finish_call(job_prefix)
if keep > 0 and recorded > 0 then
  local excess = redis.call('ZCARD', completed) - keep
  if excess > 0 then
    local old = redis.call('ZRANGE', completed, 0, math.min(excess, 2 * recorded) - 1)
    del_records(job_prefix, old)
    redis.call('ZREM', completed, unpack(old))
  end
end
return {now, table.concat(codes)}
