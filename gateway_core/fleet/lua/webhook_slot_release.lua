-- Give back an attempt's webhook delivery slot and wake the tenant's longest-parked attempt: it is made due in the
-- webhook delay queue at once. A slot whose lease already ran out is gone; the wake happens all the same (a woken
-- attempt that finds the slots held again is parked again).
--
-- KEYS[1] in_flight  the tenant's slots: sorted set of "delivery_id:attempt" (score: unix ms when the lease ends)
-- KEYS[2] parked     the tenant's attempts waiting for a slot: sorted set (score: unix ms when parked)
-- KEYS[3] delayed    the webhook delay queue: sorted set of "delivery_id:attempt" (score: unix ms when due)
-- ARGV[1] member     the attempt whose slot is released, "delivery_id:attempt"
--
-- Returns the attempt woken ("delivery_id:attempt"), or '' when none was parked.
local in_flight = KEYS[1]
local parked = KEYS[2]
local delayed = KEYS[3]
local member = ARGV[1]

redis.call('ZREM', in_flight, member)
local oldest = redis.call('ZPOPMIN', parked)
if not oldest[1] then return '' end
local t = redis.call('TIME')
redis.call('ZADD', delayed, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), oldest[1])
return oldest[1]
