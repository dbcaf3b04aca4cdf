-- Retention: delete a finished job's payload (prompt, output, parsed output, placeholder map) and mark it not
-- retained, keeping the rest of its record, and take the job out of the retention set. A job whose record is gone
-- (expired, purged) is left alone, so its hash is never re-created without a TTL; a job that is not finished (a
-- dead letter replayed since its retention was scheduled) keeps its payload until its next ending applies the
-- retention again.
--
-- KEYS[1] job_key      the job hash
-- KEYS[2] retention    sorted set of job ids whose payload is deleted when due (score: unix ms)
-- ARGV[1] job_id       the job's id (its member in the retention set)
-- ARGV[2] drop_fields  space-separated payload fields to delete
--
-- Returns 1 when the payload was dropped, 0 when there is no such job or it is not finished (nothing is written
-- to the job).
local job_key = KEYS[1]
local retention = KEYS[2]
local job_id = ARGV[1]
local drop_fields = ARGV[2]

redis.call('ZREM', retention, job_id)
if redis.call('EXISTS', job_key) == 0 then return 0 end
local status = redis.call('HGET', job_key, 'status')
if status ~= 'succeeded' and status ~= 'failed' and status ~= 'dead_lettered' and status ~= 'cancelled' then
  return 0
end
for name in string.gmatch(drop_fields, '%S+') do redis.call('HDEL', job_key, name) end
redis.call('HSET', job_key, 'payload_retained', '0')
return 1
