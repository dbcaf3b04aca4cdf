-- Append one entry to a job's stream (the deltas of an answer being generated, read by the API process that holds
-- the client's request), only while the run writing it still holds the job: a run that was taken over, or a job
-- that was cancelled or finished, cannot write into the stream any more. The stream is capped and expires.
--
-- KEYS[1] job_key      the job hash (its `run_token` and `status` are checked)
-- KEYS[2] stream_key   the job's stream
-- ARGV[1] token        the run token of the writer
-- ARGV[2] max_entries  the stream's approximate cap (XADD MAXLEN ~)
-- ARGV[3] ttl_s        seconds the stream lives after its last entry (EXPIRE)
-- ARGV[4..] field, value, ...  the entry
--
-- Returns 1 when the entry was added, 0 when the writer no longer holds the job.
local job_key = KEYS[1]
local stream_key = KEYS[2]
local token = ARGV[1]
local max_entries = ARGV[2]
local ttl_s = tonumber(ARGV[3])

local held = redis.call('HMGET', job_key, 'run_token', 'status')
if held[1] ~= token or held[2] ~= 'running' then return 0 end
redis.call('XADD', stream_key, 'MAXLEN', '~', max_entries, '*', unpack(ARGV, 4))
redis.call('EXPIRE', stream_key, ttl_s)
return 1
