-- Take from one or more token buckets at once, with Redis TIME as the clock. Each bucket refills at its rate up to
-- its capacity; a bucket blocked until a future `at` (a partner's Retry-After) refills from then on.
-- 'reserve' always takes and may leave a bucket in debt: the reply is how long until the reservation is covered,
-- and reservations are handed out in arrival order. 'admit' takes only if every bucket covers its cost now (all
-- or nothing, never into debt); otherwise it takes nothing.
--
-- KEYS[1..n] buckets  the bucket hashes (fields `level`, `at`), one per limit
-- ARGV[1]    mode     'reserve' or 'admit'
-- ARGV[2..]  limits   three per bucket, in KEYS order: rate per second, capacity, cost
--
-- Returns microseconds to wait: 0 when covered (reserve) or admitted (admit); for a refused admit, at least 1.
local mode = ARGV[1]
local BUCKET_TTL_S = 3600

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local reserve = mode == 'reserve'
local wait = 0
local levels = {}
for i, bucket in ipairs(KEYS) do
  local rate = tonumber(ARGV[3 * i - 1])
  local capacity = tonumber(ARGV[3 * i])
  local cost = math.min(tonumber(ARGV[3 * i + 1]), capacity)
  local state = redis.call('HMGET', bucket, 'level', 'at')
  local level = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  local blocked = 0
  if now > at then
    level = math.min(capacity, level + (now - at) * rate)
    at = now
  else
    blocked = at - now
  end
  local short = math.max(0, cost - level)
  wait = math.max(wait, blocked + short / rate)
  levels[i] = {level - cost, at}
end
if not reserve and wait > 0 then return math.max(1, math.floor(wait * 1000000)) end
for i, bucket in ipairs(KEYS) do
  redis.call('HSET', bucket, 'level', tostring(levels[i][1]), 'at', tostring(levels[i][2]))
  redis.call('EXPIRE', bucket, BUCKET_TTL_S)
end
return math.floor(wait * 1000000)
