-- Take one of a tenant's webhook delivery slots for an attempt, or park the attempt: a delivery over the tenant's
-- cap waits in the webhook delay queue (due again fallback_ms from now, or at once when one of the tenant's slots
-- is released), never in a worker. Slots whose lease ran out (a worker died holding them) are dropped first.
--
-- KEYS[1] in_flight    the tenant's slots: sorted set of "delivery_id:attempt" (score: unix ms when the lease ends)
-- KEYS[2] parked       the tenant's attempts waiting for a slot: sorted set (score: unix ms when parked)
-- KEYS[3] delayed      the webhook delay queue: sorted set of "delivery_id:attempt" (score: unix ms when due)
-- ARGV[1] member       the attempt, "delivery_id:attempt"
-- ARGV[2] cap          how many slots the tenant may hold
-- ARGV[3] lease_ms     the slot is the caller's this long unless released sooner
-- ARGV[4] fallback_ms  a parked attempt is due again this many ms from now even if no slot is released
-- ARGV[5] parked_ttl_ms  the parked set is kept this long after the last attempt parked in it (PEXPIRE)
--
-- Returns 1 when the slot is taken; 0 when the tenant's slots are all held and the attempt is parked; -1 when this
-- very attempt already holds a slot (a duplicate message), in which case it is parked too.
local in_flight = KEYS[1]
local parked = KEYS[2]
local delayed = KEYS[3]
local member = ARGV[1]
local cap = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local fallback_ms = tonumber(ARGV[4])
local parked_ttl_ms = tonumber(ARGV[5])

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', in_flight, '-inf', now_ms)
local held = redis.call('ZSCORE', in_flight, member)
if not held and redis.call('ZCARD', in_flight) < cap then
  redis.call('ZADD', in_flight, now_ms + lease_ms, member)
  redis.call('PEXPIRE', in_flight, lease_ms)
  redis.call('ZREM', parked, member)
  return 1
end
redis.call('ZADD', parked, 'NX', now_ms, member)
redis.call('PEXPIRE', parked, parked_ttl_ms)
redis.call('ZADD', delayed, now_ms + fallback_ms, member)
if held then return -1 end
return 0
