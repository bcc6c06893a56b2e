-- requeue.lua: a stopping pool hands back jobs it holds (not started yet, or interrupted
-- after shutdown_timeout): to the front of their priority, the attempt not counted.
-- Each is fenced by its lease token.
--
-- KEYS[1] processing   KEYS[2] pending   KEYS[3] seq   KEYS[4] wake
-- ARGV[1] job key prefix   ARGV[2..] 2 values per job: id, lease token
-- Returns {now_ms, code_1, ..., code_n}: 1 requeued, 0 the lease was no longer held.
-- A job handed back gives its concurrency slot back (give_slot in _lib.lua).

local processing, pending, seq_key, wake_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_prefix = ARGV[1]
local now = now_ms()
local out = {now}
for b = 2, #ARGV, 2 do
  local id = ARGV[b]
  local job_key = job_prefix .. id
  local held, slot = holds_lease(job_key, ARGV[b + 1])
  if held then
    redis.call('ZREM', processing, id)
    give_slot(job_prefix, job_key, id, slot)
    redis.call('HDEL', job_key, 'lease')
    bump(job_key, 'attempts', -1)
    make_ready_front(job_key, id, pending, seq_key)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #out > 1 then
  wake(wake_key)
end
return out
