-- Create many job hashes with the same field names in one call, each set to expire (a batch's jobs, a chunk at a
-- time: far fewer replies to parse than two commands per job).
--
-- KEYS[1..n] job_keys  the job hashes to write
-- ARGV[1]    ttl_s     seconds each job is kept (EXPIRE)
-- ARGV[2..]  fields    the m field names, then m values per job, in KEYS order
--
-- Returns how many jobs were written.
local ttl_s = tonumber(ARGV[1])

local n_fields = (#ARGV - 1) / (#KEYS + 1)
local pairs_ = {}
for f = 1, n_fields do pairs_[2 * f - 1] = ARGV[1 + f] end
for k, job_key in ipairs(KEYS) do
  local values_at = 1 + n_fields * k  -- this job's values are ARGV[values_at + 1 .. values_at + n_fields]
  for f = 1, n_fields do pairs_[2 * f] = ARGV[values_at + f] end
  redis.call('HSET', job_key, unpack(pairs_))
  redis.call('EXPIRE', job_key, ttl_s)
end
return #KEYS
