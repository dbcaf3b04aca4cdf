-- Finish a run unsuccessfully: the job fails, or is dead-lettered (listed in the dead-letter set for operators).
-- Written only if the caller still holds the run (no zombie run settles after a takeover). In the same step the
-- record is set to expire, the completion is announced, the partner's retention is applied to the payload (deleted
-- now, or its deletion scheduled), a batch job is counted, and the job's webhook delivery is stored with its
-- safety-net entry in the webhook delay queue (a crash right after this step cannot lose the webhook: the caller
-- sends the first attempt at once, else the webhook mover does when it is due).
--
-- KEYS[1] job_key           the job hash
-- KEYS[2] dead_letters      sorted set of dead-lettered job ids (score: unix ms when dead-lettered)
-- KEYS[3] done_channel      where the job's lane announces finished jobs (PUBLISH)
-- KEYS[4] retention         sorted set of job ids whose payload is deleted when due (score: unix ms)
-- KEYS[5] webhook_delivery  the job's webhook delivery hash (given only with a webhook, ARGV[8])
-- KEYS[6] webhook_delayed   the webhook delay queue: sorted set of "delivery_id:attempt" (with a webhook only)
-- ARGV[1] token             the run token the caller holds
-- ARGV[2] status            'dead_lettered' (also listed in dead_letters) or 'failed'
-- ARGV[3] ttl_s             seconds the finished record is kept (EXPIRE)
-- ARGV[4] job_id            the job's id (the dead-letter and retention member, and the message published)
-- ARGV[5] batch_key_prefix  a batch's hash is this prefix .. the job's batch_id
-- ARGV[6] retention_ms      delete the payload this many ms from now; '' to keep it for the record's life
-- ARGV[7] drop_fields       space-separated fields to delete now ('' for none): the payload, when it is not kept
-- ARGV[8] webhook           '' for a job without a webhook; else JSON {"fields": [field, value, ...], "ttl_ms": n,
--                           "safety_net_ms": n, "member": "delivery_id:1"}: the delivery, stored unless it exists
-- ARGV[9..] fields          field, value, field, value, ...: error, finished_at, history, ...
--
-- Returns 1 when settled, 0 when the caller no longer holds the run (nothing is written).
-- include: batch_counter.lua
-- include: webhook_delivery_store.lua
local job_key = KEYS[1]
local dead_letters = KEYS[2]
local done_channel = KEYS[3]
local retention = KEYS[4]
local webhook_delivery = KEYS[5]
local webhook_delayed = KEYS[6]
local token = ARGV[1]
local status = ARGV[2]
local ttl_s = tonumber(ARGV[3])
local job_id = ARGV[4]
local batch_key_prefix = ARGV[5]
local retention_ms = ARGV[6]
local drop_fields = ARGV[7]
local webhook = ARGV[8]
local FIRST_FIELD = 9

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
store_webhook_delivery(webhook_delivery, webhook_delayed, webhook, now_ms)
return 1
