-- Publish a run's result: the job succeeds. Written only if the caller still holds the run (no zombie run
-- publishes after a takeover). In the same step the record is set to expire, the completion is announced,
-- the payload's deletion is scheduled where the partner's retention asks, and a batch job is counted.
--
-- KEYS[1] job_key           the job hash
-- KEYS[2] done_channel      where the job's lane announces finished jobs (PUBLISH)
-- KEYS[3] retention         sorted set of job ids whose payload is deleted when due (score: unix ms)
-- ARGV[1] token             the run token the caller holds
-- ARGV[2] ttl_s             seconds the finished record is kept (EXPIRE)
-- ARGV[3] job_id            the job's id (the retention member)
-- ARGV[4] done_message      what is published on done_channel
-- ARGV[5] retention_ms      delete the payload this many ms from now; '' to keep it for the record's life
-- ARGV[6] drop_fields       space-separated fields to delete now ('' for none): the payload, when it is not kept
-- ARGV[7] batch_key_prefix  a batch's hash is this prefix .. the job's batch_id
-- ARGV[8..] fields          field, value, field, value, ...: the result and the record (history, usage, ...)
--
-- Returns 1 when published, 0 when the caller no longer holds the run (nothing is written).
-- include: batch_counter.lua
local job_key = KEYS[1]
local done_channel = KEYS[2]
local retention = KEYS[3]
local token = ARGV[1]
local ttl_s = tonumber(ARGV[2])
local job_id = ARGV[3]
local done_message = ARGV[4]
local retention_ms = ARGV[5]
local drop_fields = ARGV[6]
local batch_key_prefix = ARGV[7]
local FIRST_FIELD = 8

if redis.call('HGET', job_key, 'run_token') ~= token or redis.call('HGET', job_key, 'status') ~= 'running' then
  return 0
end
for i = FIRST_FIELD, #ARGV, 2 do redis.call('HSET', job_key, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', job_key, 'status', 'succeeded')
for name in string.gmatch(drop_fields, '%S+') do redis.call('HDEL', job_key, name) end
redis.call('EXPIRE', job_key, ttl_s)
redis.call('PUBLISH', done_channel, done_message)
if retention_ms ~= '' then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', retention, now_ms + tonumber(retention_ms), job_id)
end
count_in_batch(job_key, batch_key_prefix, 'n_succeeded', 1)
return 1
