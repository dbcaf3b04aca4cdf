-- Hand a run's job to its next delivery (a budget wait, a retry, a fallback): write its next partner, attempt and
-- status, and put it in the delay queue due `delay_ms` from now, waking a mover that may be asleep on the queue.
-- Written only if the caller still holds the run (no zombie run reschedules after a takeover).
--
-- KEYS[1] job_key   the job hash
-- KEYS[2] delayed   the lane's delay queue: sorted set of "job_id|partner|attempt" (score: unix ms when due)
-- KEYS[3] wake      the lane's wake-up list (movers BLPOP it; it holds at most one entry)
-- ARGV[1] token     the run token the caller holds
-- ARGV[2] member    the delay-queue entry, "job_id|partner|attempt"
-- ARGV[3] delay_ms  due this many ms from now
-- ARGV[4..] fields  field, value, field, value, ...: status, partner, attempt, reservation, history, ...
--
-- Returns 1 when moved on, 0 when the caller no longer holds the run (nothing is written).
local job_key = KEYS[1]
local delayed = KEYS[2]
local wake = KEYS[3]
local token = ARGV[1]
local member = ARGV[2]
local delay_ms = tonumber(ARGV[3])
local FIRST_FIELD = 4

if redis.call('HGET', job_key, 'run_token') ~= token or redis.call('HGET', job_key, 'status') ~= 'running' then
  return 0
end
for i = FIRST_FIELD, #ARGV, 2 do redis.call('HSET', job_key, ARGV[i], ARGV[i + 1]) end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', delayed, now_ms + delay_ms, member)
redis.call('LPUSH', wake, '1')
redis.call('LTRIM', wake, 0, 0)
return 1
