-- Give a claimed job back before its call (a stopping worker): it is queued again, so the next run is a first
-- run. Only the run holding the claim may give it back.
--
-- KEYS[1] job_key  the job hash
-- ARGV[1] token    the run token the caller holds
--
-- Returns 1 when given back, 0 when the caller no longer holds the claim.
local job_key = KEYS[1]
local token = ARGV[1]

if redis.call('HGET', job_key, 'run_token') ~= token or redis.call('HGET', job_key, 'status') ~= 'running' then
  return 0
end
redis.call('HSET', job_key, 'status', 'queued')
redis.call('HDEL', job_key, 'run_token')
return 1
