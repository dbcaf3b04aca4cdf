-- Take or keep the sweeper's lock: one process sweeps at a time. The holder renews it every round; if it dies the
-- lock runs out and another process takes it.
--
-- KEYS[1] lock    the lock's key (a string holding its owner)
-- ARGV[1] owner   who asks (unique per process)
-- ARGV[2] ttl_ms  how long the lock lasts from now unless renewed
--
-- Returns 1 when the caller holds the lock (taken or renewed), 0 when another process does.
local lock = KEYS[1]
local owner = ARGV[1]
local ttl_ms = ARGV[2]

local holder = redis.call('GET', lock)
if holder == owner then
  redis.call('PEXPIRE', lock, ttl_ms)
  return 1
end
if holder then return 0 end
redis.call('SET', lock, owner, 'PX', ttl_ms)
return 1
