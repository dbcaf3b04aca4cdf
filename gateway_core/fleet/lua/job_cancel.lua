-- Cancel a job that has not finished. A run in flight loses its claim: its result is discarded when it settles.
-- The cancellation is announced on the channel of the job's lane and a batch job is counted as unsuccessful.
--
-- KEYS[1] job_key             the job hash
-- KEYS[2] done_channel        where interactive jobs are announced when finished (PUBLISH)
-- KEYS[3] batch_done_channel  where batch jobs are announced when finished (PUBLISH)
-- ARGV[1] finished_at         unix seconds
-- ARGV[2] ttl_s               seconds the cancelled record is kept (EXPIRE)
-- ARGV[3] job_id              the job's id (the message published)
-- ARGV[4] batch_key_prefix    a batch's hash is this prefix .. the job's batch_id
--
-- Returns the job's status before the call ('' when there is no such job); a finished job is left as it was.
-- include: batch_counter.lua
local job_key = KEYS[1]
local done_channel = KEYS[2]
local batch_done_channel = KEYS[3]
local finished_at = ARGV[1]
local ttl_s = tonumber(ARGV[2])
local job_id = ARGV[3]
local batch_key_prefix = ARGV[4]

local status = redis.call('HGET', job_key, 'status')
if not status then return '' end
if status == 'succeeded' or status == 'failed' or status == 'dead_lettered' or status == 'cancelled' then
  return status
end
redis.call('HSET', job_key, 'status', 'cancelled', 'finished_at', finished_at, 'error', 'cancelled by the client')
redis.call('HDEL', job_key, 'run_token', 'reservation')
redis.call('EXPIRE', job_key, ttl_s)
if redis.call('HGET', job_key, 'lane') == 'batch' then
  redis.call('PUBLISH', batch_done_channel, job_id)
else
  redis.call('PUBLISH', done_channel, job_id)
end
count_in_batch(job_key, batch_key_prefix, 'n_unsuccessful', 1)
return status
