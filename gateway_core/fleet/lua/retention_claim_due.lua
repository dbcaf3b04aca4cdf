-- Take the jobs whose payload retention has run out: removed from the retention set as they are returned (the
-- caller deletes each one's payload).
--
-- KEYS[1] retention  sorted set of job ids (score: unix ms when the payload is to be deleted)
-- ARGV[1] limit      take at most this many
--
-- Returns the job ids taken.
local retention = KEYS[1]
local limit = tonumber(ARGV[1])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', retention, '-inf', now_ms, 'LIMIT', 0, limit)
if #due > 0 then redis.call('ZREM', retention, unpack(due)) end
return due
