-- cron_fire.lua: fire one cron job for one fire time, exactly once across any number of
-- schedulers: claim and enqueue in one atomic call, with no lock and no leader.
--
-- The claim is the cron job's last fire time: a fire time at or before it was already
-- fired (by this or another scheduler) and is refused. Claims only move forward, so a
-- slow or restarted scheduler can never fire a time twice, whatever its timing. The job
-- id is deterministic per (cron id, fire time) as a second guard.
--
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] stats   KEYS[5] wake
-- KEYS[6] this cron job's state hash (B..'cron:'..id)   KEYS[7] crons index
-- ARGV[1] job key prefix   ARGV[2] cron id   ARGV[3] fire time (ms)
-- ARGV[4] the following fire time (ms, '' if none)   ARGV[5] state ttl (ms)
-- ARGV[6..14] the job: id, type, payload, priority, max_retries, timeout_ms, backoff,
--             metadata, delay_ms
-- Returns {fired, last_fire_ms}: fired 1 if this call enqueued the job, 0 if the fire
-- time was already claimed; last_fire_ms the claim now stored.
--
-- A damaged claim (a last_fire that is not a number, or a state key that is not a hash)
-- counts as no claim: the deterministic job id still keeps a fire time from enqueueing
-- twice while its job's record lives, and the claim is written afresh. Refusing instead
-- would stop the cron job for good.
--
-- Sets 'enabled' to 1: the caller runs the cron job, whatever a peer that disabled it
-- announced, and the listing (the crons index) shows it again.

local state, crons = KEYS[6], KEYS[7]
local cron_id, fire = ARGV[2], tonumber(ARGV[3])
local kind = record_type(state)
if kind ~= 'hash' and kind ~= 'none' then
  redis.log(redis.LOG_WARNING, 'jobs: ' .. state .. ' holds a ' .. kind ..
    ', not a cron state: replaced')
  redis.call('DEL', state)
end
local last = tonumber(redis.call('HGET', state, 'last_fire')) or -1
local fired = 0
if fire > last then
  local now = now_ms()
  promote_due(ARGV[1], KEYS[2], KEYS[1], KEYS[3], KEYS[4], now, PROMOTE_ON_WRITE)
  local seq = take(KEYS[3], 1)
  local adds = {pending = {}, scheduled = {}}
  if add_job(ARGV[1], adds, now, seq, ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10],
             ARGV[11], ARGV[12], ARGV[13], ARGV[14], true) then
    flush_adds(KEYS[1], KEYS[2], KEYS[4], adds, now)
    wake(KEYS[5])
  end
  redis.call('HSET', state, 'last_fire', int(fire), 'last_job_id', ARGV[6])
  last = fire
  fired = 1
end
redis.call('HSET', state, 'enabled', '1')
if ARGV[4] ~= '' then
  redis.call('HSET', state, 'next_run', ARGV[4])
  -- Only a listing (python -m jobs crons): a damaged one must not fail the fire.
  redis.pcall('ZADD', crons, ARGV[4], cron_id)
end
redis.call('PEXPIRE', state, tonumber(ARGV[5]))
return {fired, int(last)}
