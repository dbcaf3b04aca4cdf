-- Send a dead-lettered webhook delivery again: same delivery (same webhook-id), its retries counted afresh from
-- the next attempt number, which is due now. A delivery whose body is gone cannot be replayed.
--
-- KEYS[1] delivery      the delivery hash
-- KEYS[2] delayed       the webhook delay queue: sorted set of "delivery_id:attempt" (score: unix ms when due)
-- KEYS[3] dead_letters  sorted set of dead-lettered delivery ids
-- ARGV[1] delivery_id   the delivery's id
-- ARGV[2] ttl_ms        ms the delivery is kept from now (PEXPIRE)
--
-- Returns the attempt number scheduled, or 0 when the delivery is not replayable.
local delivery = KEYS[1]
local delayed = KEYS[2]
local dead_letters = KEYS[3]
local delivery_id = ARGV[1]
local ttl_ms = tonumber(ARGV[2])

if redis.call('HGET', delivery, 'state') ~= 'dead_lettered' or redis.call('HEXISTS', delivery, 'body') == 0 then
  return 0
end
local next_attempt = tonumber(redis.call('HGET', delivery, 'attempts') or '0') + 1
redis.call('HSET', delivery, 'state', 'pending', 'next_attempt', next_attempt, 'first_attempt', next_attempt)
redis.call('HDEL', delivery, 'dead_lettered_at_ms')
redis.call('PEXPIRE', delivery, ttl_ms)
redis.call('ZREM', dead_letters, delivery_id)
local t = redis.call('TIME')
redis.call('ZADD', delayed, tonumber(t[1]) * 1000, delivery_id .. ':' .. next_attempt)
return next_attempt
