-- Purge a batch of dead letters dead-lettered at or before a cutoff. Entries re-scored or removed since the caller
-- read them are skipped; a record that is no longer dead-lettered keeps its hash (only the stray entry goes).
--
-- KEYS[1]    dead_letters  sorted set of dead-lettered job ids (score: unix ms when dead-lettered)
-- KEYS[2..]  job_keys      the job hashes, in the order of job_ids
-- ARGV[1]    cutoff_ms     purge entries scored at or before this; '' for every entry
-- ARGV[2..]  job_ids       the jobs' ids (their dead-letter members)
--
-- Returns how many records were deleted.
local dead_letters = KEYS[1]
local cutoff_ms = ARGV[1]
local FIRST_JOB = 2

local removed = 0
for i = FIRST_JOB, #ARGV do
  local job_id, job_key = ARGV[i], KEYS[i]
  local score = redis.call('ZSCORE', dead_letters, job_id)
  if score and (cutoff_ms == '' or tonumber(score) <= tonumber(cutoff_ms)) then
    local status = redis.call('HGET', job_key, 'status')
    if not status or status == 'dead_lettered' then
      redis.call('DEL', job_key)
      removed = removed + 1
    end
    redis.call('ZREM', dead_letters, job_id)
  end
end
return removed
