-- Give tokens back to a bucket (positive) or take more (negative) once the partner has reported what a call really
-- used; the level never rises above capacity. A bucket that has expired is left alone.
--
-- KEYS[1] bucket    the bucket hash (fields `level`, `at`)
-- ARGV[1] delta     tokens to add (estimated minus actual)
-- ARGV[2] capacity  the bucket's capacity
--
-- Returns 1 when adjusted, 0 when the bucket does not exist.
local bucket = KEYS[1]
local delta = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])

local level = tonumber(redis.call('HGET', bucket, 'level'))
if not level then return 0 end
redis.call('HSET', bucket, 'level', tostring(math.min(capacity, level + delta)))
return 1
