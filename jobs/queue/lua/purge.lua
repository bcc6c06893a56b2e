-- purge.lua: delete up to N jobs listed in one index (pending, scheduled, completed,
-- failed or cancelled), records included. Call again until it returns 0.
--
-- KEYS[1] the index zset
-- ARGV[1] job key prefix   ARGV[2] N
-- Returns how many jobs were deleted by this call.

local index, job_prefix = KEYS[1], ARGV[1]
local ids = redis.call('ZRANGE', index, 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', job_prefix .. id)
end
if #ids > 0 then
  redis.call('ZREM', index, unpack(ids))
end
return #ids
