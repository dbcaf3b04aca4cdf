-- Record what one attempt of a webhook delivery came to, and what follows: delivered (the body and secrets are
-- deleted), a retry due delay_ms from now, or dead-lettered. Only the attempt the delivery expects may record.
--
-- KEYS[1] delivery      the delivery hash
-- KEYS[2] delayed       the webhook delay queue: sorted set of "delivery_id:attempt" (score: unix ms when due)
-- KEYS[3] dead_letters  sorted set of dead-lettered delivery ids (score: unix ms)
-- ARGV[1] attempt       the attempt that was made
-- ARGV[2] decision      'done', 'retry', or anything else: dead-letter
-- ARGV[3] delay_ms      for 'retry': the next attempt is due this many ms from now
-- ARGV[4] last_status   the HTTP status answered ('' for none)
-- ARGV[5] last_error    what went wrong ('' for nothing)
-- ARGV[6] delivery_id   the delivery's id
--
-- Returns 1 when recorded, 0 when the delivery no longer expects this attempt (nothing written).
local delivery = KEYS[1]
local delayed = KEYS[2]
local dead_letters = KEYS[3]
local attempt = ARGV[1]
local decision = ARGV[2]
local delay_ms = tonumber(ARGV[3])
local last_status = ARGV[4]
local last_error = ARGV[5]
local delivery_id = ARGV[6]

if redis.call('HGET', delivery, 'state') ~= 'pending' or redis.call('HGET', delivery, 'next_attempt') ~= attempt then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', delivery, 'attempts', attempt, 'last_status', last_status, 'last_error', last_error,
           'last_attempt_at_ms', now_ms)
if decision == 'done' then
  redis.call('HSET', delivery, 'state', 'delivered', 'delivered_at_ms', now_ms)
  redis.call('HDEL', delivery, 'body', 'secrets')
elseif decision == 'retry' then
  local next_attempt = tonumber(attempt) + 1
  redis.call('HSET', delivery, 'next_attempt', next_attempt)
  redis.call('ZADD', delayed, now_ms + delay_ms, delivery_id .. ':' .. next_attempt)
else
  redis.call('HSET', delivery, 'state', 'dead_lettered', 'dead_lettered_at_ms', now_ms)
  redis.call('ZADD', dead_letters, now_ms, delivery_id)
end
return 1
