-- Purge one dead letter: its record and its entry in the dead-letter set. A job that is not dead-lettered is left
-- alone; an entry whose record already expired is removed.
--
-- KEYS[1] job_key       the job hash
-- KEYS[2] dead_letters  sorted set of dead-lettered job ids
-- ARGV[1] job_id        the job's id (its dead-letter member)
--
-- Returns {'ok', 'deleted'}, {'ok', 'expired'} (only the entry was left), {'missing', ''} (neither exists) or
-- {'status', <status>} (not dead-lettered: nothing done).
local job_key = KEYS[1]
local dead_letters = KEYS[2]
local job_id = ARGV[1]

local status = redis.call('HGET', job_key, 'status')
if status and status ~= 'dead_lettered' then return {'status', status} end
local listed = redis.call('ZREM', dead_letters, job_id)
if not status then
  if listed == 1 then return {'ok', 'expired'} end
  return {'missing', ''}
end
redis.call('DEL', job_key)
return {'ok', 'deleted'}
