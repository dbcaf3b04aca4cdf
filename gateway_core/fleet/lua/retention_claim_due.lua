-- Take the jobs whose payload retention has run out, for one sweeper: each is leased (re-scored lease_ms ahead)
-- rather than removed, so a sweeper that dies before deleting a payload leaves it to another; the deletion
-- (job_drop_payload.lua) takes the job out of the set.
--
-- KEYS[1] retention  sorted set of job ids (score: unix ms when the payload is to be deleted)
-- ARGV[1] limit      take at most this many
-- ARGV[2] lease_ms   how long the taken jobs are the caller's (default 60000)
--
-- Returns the job ids taken.
local retention = KEYS[1]
local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2] or '60000')

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', retention, '-inf', now_ms, 'LIMIT', 0, limit)
for _, job_id in ipairs(due) do redis.call('ZADD', retention, now_ms + lease_ms, job_id) end
return due
