-- purge.lua: delete up to N jobs listed in one index (pending, scheduled, completed,
-- failed or cancelled, or a job type's held-back jobs), records included. Call again
-- until it returns 0.
--
-- KEYS[1] the index zset   KEYS[2] (optional) the queue's 'parked' zset, when KEYS[1]
-- is a type's held-back list (B..'parked:'..type, see _lib.lua)
-- ARGV[1] job key prefix   ARGV[2] N
-- ARGV[3] failed_ttl_ms   ARGV[4] max cancelled records kept: for the jobs that waited
--           for a purged job (see below)
-- ARGV[5] (with KEYS[2]) the job type
-- Returns how many jobs were deleted by this call. A held-back list left empty takes its
-- type out of KEYS[2] in the same call, so a fetch that parks a job of it meanwhile
-- cannot be undone.
--
-- Jobs that wait for a purged job (JobConfig.depends_on) would otherwise wait forever:
-- they are cancelled, transitively, their error naming it ('dependency X was purged'),
-- or released if they run whatever the outcome ('after' = 'any'), as a cancel of the
-- purged job would (settle_one in _lib.lua), purged ids taken in id order.

local index, job_prefix = KEYS[1], ARGV[1]
local ids = redis.call('ZRANGE', index, 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', job_prefix .. id)
end
if #ids > 0 then
  redis.call('ZREM', index, unpack(ids))
  local sorted = {unpack(ids)}
  table.sort(sorted)
  for _, id in ipairs(sorted) do
    to_settle[#to_settle + 1] = {id, 'purged', tonumber(ARGV[3]), tonumber(ARGV[4])}
  end
  settle_all(job_prefix, string.sub(job_prefix, 1, #job_prefix - 4), now_ms())
  finish_call(job_prefix)
end
if KEYS[2] and redis.call('EXISTS', index) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[5])
end
return #ids
