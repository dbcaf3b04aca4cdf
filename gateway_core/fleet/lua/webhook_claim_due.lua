-- Claim the due entries of the webhook delay queue for one mover: each is leased (re-scored lease_ms ahead) rather
-- than removed, so a mover that dies before sending them leaves them to another; the mover removes what it sent.
--
-- KEYS[1] delayed   the webhook delay queue: sorted set of "delivery_id:attempt" (score: unix ms when due)
-- ARGV[1] limit     claim at most this many entries
-- ARGV[2] lease_ms  how long the claimed entries are the caller's
--
-- Returns the claimed entries.
local delayed = KEYS[1]
local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, limit)
for _, member in ipairs(due) do redis.call('ZADD', delayed, now_ms + lease_ms, member) end
return due
