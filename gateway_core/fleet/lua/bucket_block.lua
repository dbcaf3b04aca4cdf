-- A partner's 429: empty the bucket and let nothing more through until its Retry-After has passed (the bucket
-- refills from then on). A block that ends sooner than one already in place changes nothing.
--
-- KEYS[1] bucket   the bucket hash (fields `level`, `at`)
-- ARGV[1] seconds  how long to block, from Redis TIME now
--
-- Returns 1.
local bucket = KEYS[1]
local seconds = tonumber(ARGV[1])
local BUCKET_TTL_S = 3600

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_at = now + seconds
local at = tonumber(redis.call('HGET', bucket, 'at')) or now
if until_at > at then
  redis.call('HSET', bucket, 'level', '0', 'at', tostring(until_at))
  redis.call('EXPIRE', bucket, BUCKET_TTL_S)
end
return 1
