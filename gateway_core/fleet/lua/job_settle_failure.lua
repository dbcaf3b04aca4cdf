-- Finish a run unsuccessfully: the job fails, or is dead-lettered (listed in the dead-letter set for operators).
-- Written only if the caller still holds the run (no zombie run settles after a takeover). In the same step the
-- record is set to expire, the completion is announced, the partner's retention is applied to the payload (deleted
-- now, or its deletion scheduled) and a batch job is counted.
--
-- KEYS[1] job_key           the job hash
-- KEYS[2] dead_letters      sorted set of dead-lettered job ids (score: unix ms when dead-lettered)
-- KEYS[3] done_channel      where the job's lane announces finished jobs (PUBLISH)
-- KEYS[4] retention         sorted set of job ids whose payload is deleted when due (score: unix ms)
-- ARGV[1] token             the run token the caller holds
-- ARGV[2] status            'dead_lettered' (also listed in dead_letters) or 'failed'
-- ARGV[3] ttl_s             seconds the finished record is kept (EXPIRE)
-- ARGV[4] job_id            the job's id (the dead-letter and retention member, and the message published)
-- ARGV[5] batch_key_prefix  a batch's hash is this prefix .. the job's batch_id
-- ARGV[6] retention_ms      delete the payload this many ms from now; '' to keep it for the record's life
-- ARGV[7] drop_fields       space-separated fields to delete now ('' for none): the payload, when it is not kept
-- ARGV[8..] fields          field, value, field, value, ...: error, finished_at, history, ...
--
-- Returns 1 when settled, 0 when the caller no longer holds the run (nothing is written).
-- include: batch_counter.lua
local job_key = KEYS[1]
local dead_letters = KEYS[2]
local done_channel = KEYS[3]
local retention = KEYS[4]
local token = ARGV[1]
local status = ARGV[2]
local ttl_s = tonumber(ARGV[3])
local job_id = ARGV[4]
local batch_key_prefix = ARGV[5]
local retention_ms = ARGV[6]
local drop_fields = ARGV[7]
local FIRST_FIELD = 8

if redis.call('HGET', job_key, 'run_token') ~= token or redis.call('HGET', job_key, 'status') ~= 'running' then
  return 0
end
for i = FIRST_FIELD, #ARGV, 2 do redis.call('HSET', job_key, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', job_key, 'status', status)
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if status == 'dead_lettered' then
  redis.call('ZADD', dead_letters, now_ms, job_id)
end
if drop_fields ~= '' then
  for name in string.gmatch(drop_fields, '%S+') do redis.call('HDEL', job_key, name) end
  redis.call('HSET', job_key, 'payload_retained', '0')
end
if retention_ms ~= '' then
  redis.call('ZADD', retention, now_ms + tonumber(retention_ms), job_id)
end
redis.call('EXPIRE', job_key, ttl_s)
redis.call('PUBLISH', done_channel, job_id)
count_in_batch(job_key, batch_key_prefix, 'n_unsuccessful', 1)
return 1
