-- Cancel a job that has not finished. A run in flight loses its claim: its result is discarded when it settles.
-- The cancellation is announced on the channel of the job's lane, the partner's retention is applied to the
-- payload (deleted now, or its deletion scheduled), a batch job is counted as unsuccessful, and the job's
-- `job.cancelled` webhook delivery is stored with its safety-net entry in the same step (the caller sends the first
-- attempt at once; if it dies first, the webhook mover sends it when due).
--
-- KEYS[1] job_key             the job hash
-- KEYS[2] done_channel        where interactive jobs are announced when finished (PUBLISH)
-- KEYS[3] batch_done_channel  where batch jobs are announced when finished (PUBLISH)
-- KEYS[4] retention           sorted set of job ids whose payload is deleted when due (score: unix ms)
-- KEYS[5] webhook_delivery    the job's webhook delivery hash (given only with a webhook, ARGV[7])
-- KEYS[6] webhook_delayed     the webhook delay queue: sorted set of "delivery_id:attempt" (with a webhook only)
-- ARGV[1] finished_at         unix seconds
-- ARGV[2] ttl_s               seconds the cancelled record is kept (EXPIRE)
-- ARGV[3] job_id              the job's id (the retention member and the message published)
-- ARGV[4] batch_key_prefix    a batch's hash is this prefix .. the job's batch_id
-- ARGV[5] retention_ms        delete the payload this many ms from now; '' to keep it for the record's life
-- ARGV[6] drop_fields         space-separated fields to delete now ('' for none): the payload, when it is not kept
-- ARGV[7] webhook             '' for a job without a webhook; else the delivery as webhook_delivery_store.lua reads it
--
-- Returns the job's status before the call ('' when there is no such job); a finished job is left as it was.
-- include: batch_counter.lua
-- include: webhook_delivery_store.lua
local job_key = KEYS[1]
local done_channel = KEYS[2]
local batch_done_channel = KEYS[3]
local retention = KEYS[4]
local finished_at = ARGV[1]
local ttl_s = tonumber(ARGV[2])
local job_id = ARGV[3]
local batch_key_prefix = ARGV[4]
local retention_ms = ARGV[5]
local drop_fields = ARGV[6]
local webhook = ARGV[7] or ''
local webhook_delivery = KEYS[5]
local webhook_delayed = KEYS[6]

local status = redis.call('HGET', job_key, 'status')
if not status then return '' end
if status == 'succeeded' or status == 'failed' or status == 'dead_lettered' or status == 'cancelled' then
  return status
end
redis.call('HSET', job_key, 'status', 'cancelled', 'finished_at', finished_at, 'error', 'cancelled by the client')
redis.call('HDEL', job_key, 'run_token', 'reservation')
if drop_fields ~= '' then
  for name in string.gmatch(drop_fields, '%S+') do redis.call('HDEL', job_key, name) end
  redis.call('HSET', job_key, 'payload_retained', '0')
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if retention_ms ~= '' then
  redis.call('ZADD', retention, now_ms + tonumber(retention_ms), job_id)
end
store_webhook_delivery(webhook_delivery, webhook_delayed, webhook, now_ms)
redis.call('EXPIRE', job_key, ttl_s)
if redis.call('HGET', job_key, 'lane') == 'batch' then
  redis.call('PUBLISH', batch_done_channel, job_id)
else
  redis.call('PUBLISH', done_channel, job_id)
end
count_in_batch(job_key, batch_key_prefix, 'n_unsuccessful', 1)
return status
