-- Publish a run's result: the job succeeds. Written only if the caller still holds the run (no zombie run
-- publishes after a takeover). In the same step the record is set to expire, the completion is announced,
-- the payload's deletion is scheduled where the partner's retention asks, a batch job is counted, and the job's
-- webhook delivery is stored with its safety-net entry in the webhook delay queue (a crash right after this step
-- cannot lose the webhook: the caller sends the first attempt at once, else the webhook mover does when it is due).
--
-- KEYS[1] job_key           the job hash
-- KEYS[2] done_channel      where the job's lane announces finished jobs (PUBLISH)
-- KEYS[3] retention         sorted set of job ids whose payload is deleted when due (score: unix ms)
-- KEYS[4] webhook_delivery  the job's webhook delivery hash (given only with a webhook, ARGV[8])
-- KEYS[5] webhook_delayed   the webhook delay queue: sorted set of "delivery_id:attempt" (with a webhook only)
-- ARGV[1] token             the run token the caller holds
-- ARGV[2] ttl_s             seconds the finished record is kept (EXPIRE)
-- ARGV[3] job_id            the job's id (the retention member)
-- ARGV[4] done_message      what is published on done_channel
-- ARGV[5] retention_ms      delete the payload this many ms from now; '' to keep it for the record's life
-- ARGV[6] drop_fields       space-separated fields to delete now ('' for none): the payload, when it is not kept
-- ARGV[7] batch_key_prefix  a batch's hash is this prefix .. the job's batch_id
-- ARGV[8] webhook           '' for a job without a webhook; else JSON {"fields": [field, value, ...], "ttl_ms": n,
--                           "safety_net_ms": n, "member": "delivery_id:1"}: the delivery, stored unless it exists
-- ARGV[9..] fields          field, value, field, value, ...: the result and the record (history, usage, ...)
--
-- Returns 1 when published, 0 when the caller no longer holds the run (nothing is written).
-- include: batch_counter.lua
-- include: webhook_delivery_store.lua
local job_key = KEYS[1]
local done_channel = KEYS[2]
local retention = KEYS[3]
local webhook_delivery = KEYS[4]
local webhook_delayed = KEYS[5]
local token = ARGV[1]
local ttl_s = tonumber(ARGV[2])
local job_id = ARGV[3]
local done_message = ARGV[4]
local retention_ms = ARGV[5]
local drop_fields = ARGV[6]
local batch_key_prefix = ARGV[7]
local webhook = ARGV[8]
local FIRST_FIELD = 9

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
if webhook ~= '' then
  local t = redis.call('TIME')
  store_webhook_delivery(webhook_delivery, webhook_delayed, webhook,
                         tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
return 1
