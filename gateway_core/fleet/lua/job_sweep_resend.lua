-- Re-send a job whose message the sweeper found nowhere (no queue list, no unacknowledged delivery, no delay-queue
-- entry): the way a retry is scheduled (job_settle_move_on.lua), as a new attempt on the same partner in its lane's
-- delay queue due now, so the delay-queue mover sends it through the normal enqueue path. Guarded on everything the
-- sweeper saw (status, partner, attempt, run token: compare-and-set), so of several sweepers, or a sweeper racing a
-- worker, only one acts, and only on the job as it saw it. A 'swept' entry in the history says what happened; a
-- run that still held the job loses its claim (its settle becomes a no-op).
--
-- KEYS[1] job_key       the job hash
-- KEYS[2] delayed       the job's lane's delay queue (sorted set of "job_id|partner|attempt", score: due ms)
-- KEYS[3] wake          the lane's wake-up list (movers BLPOP it; it holds at most one entry)
-- KEYS[4] unfinished    the index of unfinished jobs (sorted set of job ids, score: ms when last looked at)
-- ARGV[1] job_id        the job's id
-- ARGV[2] status        the status the sweeper saw
-- ARGV[3] partner       the partner the sweeper saw
-- ARGV[4] attempt       the attempt number the sweeper saw
-- ARGV[5] run_token     the run token the sweeper saw ('' for none)
-- ARGV[6] next_attempt  the attempt number of the re-send
-- ARGV[7] member        the delay-queue entry of the re-send, "job_id|partner|next_attempt"
-- ARGV[8] reason        the history entry's text
--
-- Returns 'resent', 'missing' (no record), 'changed' (the job is no longer as the sweeper saw it) or 'delayed' (its
-- current attempt is in the delay queue after all: its message is not lost).
local job_key = KEYS[1]
local delayed = KEYS[2]
local wake = KEYS[3]
local unfinished = KEYS[4]
local job_id = ARGV[1]
local status = ARGV[2]
local partner = ARGV[3]
local attempt = ARGV[4]
local run_token = ARGV[5]
local next_attempt = ARGV[6]
local member = ARGV[7]
local reason = ARGV[8]

local seen = redis.call('HMGET', job_key, 'status', 'partner', 'attempt', 'run_token')
if not seen[1] then return 'missing' end
if seen[1] ~= status or seen[2] ~= partner or seen[3] ~= attempt or (seen[4] or '') ~= run_token then
  return 'changed'
end
if redis.call('ZSCORE', delayed, job_id .. '|' .. partner .. '|' .. attempt) then return 'delayed' end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local history = cjson.decode(redis.call('HGET', job_key, 'history') or '[]')
table.insert(history, {partner = partner, attempt = tonumber(next_attempt), outcome = 'swept', error = reason,
                       started_at = now_ms / 1000, duration_ms = 0})
redis.call('HSET', job_key, 'status', 'queued', 'attempt', next_attempt, 'history', cjson.encode(history))
redis.call('HDEL', job_key, 'run_token', 'reservation')
redis.call('ZADD', delayed, now_ms, member)
redis.call('LPUSH', wake, '1')
redis.call('LTRIM', wake, 0, 0)
redis.call('ZADD', unfinished, now_ms, job_id)
return 'resent'
