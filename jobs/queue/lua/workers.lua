-- workers.lua: the live pools of one queue, dropping records of pools that stopped
-- beating.
--
-- KEYS[1] workers
-- ARGV[1] record key prefix (B..'worker:')
-- Returns {now_ms, {id, record as a flat HGETALL list}, ...}

local workers = KEYS[1]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
local out = {now}
for _, id in ipairs(redis.call('ZRANGE', workers, 0, -1)) do
  local record = redis.call('HGETALL', ARGV[1] .. id)
  if #record > 0 then
    out[#out + 1] = {id, record}
  end
end
return out
