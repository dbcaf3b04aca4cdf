-- Store a new webhook delivery (once: an existing delivery is left as it is) and put a safety-net entry for its
-- first attempt in the webhook delay queue, which the mover sends if the producer dies before sending it.
--
-- KEYS[1] delivery       the delivery hash
-- KEYS[2] delayed        the webhook delay queue: sorted set of "delivery_id:attempt" (score: unix ms when due)
-- ARGV[1] ttl_ms         ms the delivery is kept (PEXPIRE)
-- ARGV[2] safety_net_ms  the safety-net entry is due this many ms from now
-- ARGV[3] member         the safety-net entry, "delivery_id:1"
-- ARGV[4..] fields       field, value, field, value, ...: the delivery (state, tenant, url, encrypted body, ...)
--
-- Returns 1 when stored, 0 when the delivery already existed.
local delivery = KEYS[1]
local delayed = KEYS[2]
local ttl_ms = tonumber(ARGV[1])
local safety_net_ms = tonumber(ARGV[2])
local member = ARGV[3]
local FIRST_FIELD = 4

if redis.call('EXISTS', delivery) == 1 then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', delivery, 'created_at_ms', now_ms, unpack(ARGV, FIRST_FIELD))
redis.call('PEXPIRE', delivery, ttl_ms)
redis.call('ZADD', delayed, now_ms + safety_net_ms, member)
return 1
