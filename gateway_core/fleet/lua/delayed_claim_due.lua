-- Claim the due entries of a delay queue for one mover: each is leased (re-scored lease_ms ahead) rather than
-- removed, so a mover that dies before sending them leaves them to another; the mover removes what it sent.
--
-- KEYS[1] delayed   a delay queue: sorted set of entries (score: unix ms when due); a lane's job attempts
--                   "job_id|partner|attempt", or webhook retries "delivery_id:attempt"
-- ARGV[1] limit     claim at most this many entries
-- ARGV[2] lease_ms  how long the claimed entries are the caller's
--
-- Returns {claimed entries, ms until the earliest remaining entry is due (0: due now, -1: the queue is empty)}.
local delayed = KEYS[1]
local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, limit)
for _, member in ipairs(due) do redis.call('ZADD', delayed, now_ms + lease_ms, member) end
local head = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local wait_ms = -1
if head[2] then wait_ms = math.max(0, tonumber(head[2]) - now_ms) end
return {due, wait_ms}
