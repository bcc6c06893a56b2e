-- purge.lua: delete up to N jobs listed in one index (pending, scheduled, completed,
-- failed or cancelled, or a job type's held-back jobs), records included. Call again
-- until it returns 0.
--
-- KEYS[1] the index zset   KEYS[2] (optional) the queue's 'parked' zset, when KEYS[1]
-- is a type's held-back list (B..'parked:'..type, see _lib.lua)
-- ARGV[1] job key prefix   ARGV[2] N   ARGV[3] (with KEYS[2]) the job type
-- Returns how many jobs were deleted by this call. A held-back list left empty takes its
-- type out of KEYS[2] in the same call, so a fetch that parks a job of it meanwhile
-- cannot be undone.

local index, job_prefix = KEYS[1], ARGV[1]
local ids = redis.call('ZRANGE', index, 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', job_prefix .. id)
end
if #ids > 0 then
  redis.call('ZREM', index, unpack(ids))
end
if KEYS[2] and redis.call('EXISTS', index) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
end
return #ids
