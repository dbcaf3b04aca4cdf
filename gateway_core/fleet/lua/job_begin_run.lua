-- Claim a job for one run (one delivery of one attempt), handing back its fields so that a run costs one round
-- trip to start. Only the delivery the job expects (its partner and attempt) may claim it; a job already running
-- is taken over (its earlier run lost its worker) and the new run token makes the earlier run's settle a no-op.
--
-- KEYS[1] job_key     the job hash
-- ARGV[1] partner     the partner this delivery targets
-- ARGV[2] attempt     the attempt number this delivery carries
-- ARGV[3] token       the new run's token (written as `run_token`)
-- ARGV[4] started_at  unix seconds, written only on the job's first run
--
-- Returns 'missing' (no such job), 'done' (it finished), 'stale' (another partner or attempt is due), or
-- {'ok' | 'redelivered', the job's fields as HGETALL answers}: 'redelivered' when it was already running.
local job_key = KEYS[1]
local partner = ARGV[1]
local attempt = ARGV[2]
local token = ARGV[3]
local started_at = ARGV[4]

local status = redis.call('HGET', job_key, 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'dead_lettered' or status == 'cancelled' then
  return 'done'
end
if redis.call('HGET', job_key, 'partner') ~= partner or redis.call('HGET', job_key, 'attempt') ~= attempt then
  return 'stale'
end
local word = 'ok'
if status == 'running' then word = 'redelivered' end
redis.call('HSET', job_key, 'status', 'running', 'run_token', token)
if not redis.call('HGET', job_key, 'started_at') then redis.call('HSET', job_key, 'started_at', started_at) end
return {word, redis.call('HGETALL', job_key)}
