-- Replay one dead letter, the way a retry is scheduled (job_settle_move_on.lua): the job is queued again for its
-- next attempt number on the given partner, taken out of the dead-letter set and put in its lane's delay queue due
-- now. Guarded on status AND attempt (compare-and-set), so two concurrent replays, or a replay racing a purge,
-- cannot both act. A 'replayed' entry in the history makes retries and fallbacks count afresh from here; a batch
-- job's unsuccessful count is taken back.
--
-- KEYS[1] job_key           the job hash
-- KEYS[2] dead_letters      sorted set of dead-lettered job ids
-- KEYS[3] delayed           the job's lane's delay queue (sorted set of "job_id|partner|attempt", score: due ms)
-- KEYS[4] wake              the lane's wake-up list (movers BLPOP it; it holds at most one entry)
-- KEYS[5] unfinished        the sweeper's index of unfinished jobs (score: ms when last looked at): the job is back
-- ARGV[1] job_id            the job's id (its dead-letter member)
-- ARGV[2] partner           the partner to replay to
-- ARGV[3] attempt           the attempt number the caller read (the replay is refused if it changed)
-- ARGV[4] next_attempt      the attempt number of the replay
-- ARGV[5] member            the delay-queue entry, "job_id|partner|next_attempt"
-- ARGV[6] ttl_s             seconds the record is kept from now (EXPIRE)
-- ARGV[7] batch_key_prefix  a batch's hash is this prefix .. the job's batch_id
--
-- Returns {'ok', next_attempt}, {'missing', ''} (no record; its stray entry is removed), {'status', <status>}
-- (not dead-lettered), {'changed', ''} (its attempt changed since the caller read it) or {'payload_removed', ''}
-- (a partner's retention deleted its prompt: there is nothing to send again).
-- include: batch_counter.lua
local job_key = KEYS[1]
local dead_letters = KEYS[2]
local delayed = KEYS[3]
local wake = KEYS[4]
local unfinished = KEYS[5]
local job_id = ARGV[1]
local partner = ARGV[2]
local attempt = ARGV[3]
local next_attempt = ARGV[4]
local member = ARGV[5]
local ttl_s = tonumber(ARGV[6])
local batch_key_prefix = ARGV[7]

local status = redis.call('HGET', job_key, 'status')
if not status then
  redis.call('ZREM', dead_letters, job_id)
  return {'missing', ''}
end
if status ~= 'dead_lettered' then return {'status', status} end
if redis.call('HGET', job_key, 'attempt') ~= attempt then return {'changed', ''} end
if redis.call('HGET', job_key, 'payload_retained') == '0' then return {'payload_removed', ''} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local history = cjson.decode(redis.call('HGET', job_key, 'history') or '[]')
table.insert(history, {partner = partner, attempt = tonumber(next_attempt), outcome = 'replayed',
                       started_at = now_ms / 1000, duration_ms = 0})
redis.call('HSET', job_key, 'status', 'queued', 'partner', partner, 'attempt', next_attempt,
           'history', cjson.encode(history))
redis.call('HDEL', job_key, 'error', 'finished_at', 'run_token', 'reservation')
count_in_batch(job_key, batch_key_prefix, 'n_unsuccessful', -1)
redis.call('EXPIRE', job_key, ttl_s)
redis.call('ZREM', dead_letters, job_id)
redis.call('ZADD', delayed, now_ms, member)
redis.call('LPUSH', wake, '1')
redis.call('LTRIM', wake, 0, 0)
redis.call('ZADD', unfinished, now_ms, job_id)
return {'ok', next_attempt}
