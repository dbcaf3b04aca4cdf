-- Included, not run alone: scripts that settle a job (`-- include: batch_counter.lua`) get this function.
--
-- count_in_batch(job_key, batch_key_prefix, field, by)
--   A job of a batch counts its outcome in its batch's hash, in the same step that settles it, so a batch's
--   progress is two counters to read rather than one status per job. The batch hash is `batch_key_prefix` ..
--   the job's `batch_id` field; it is never re-created once gone. Nothing happens for a job of no batch.
--   field: 'n_succeeded' or 'n_unsuccessful'; by: 1, or -1 to take a count back (a replayed dead letter).
local function count_in_batch(job_key, batch_key_prefix, field, by)
  local batch_id = redis.call('HGET', job_key, 'batch_id')
  if not batch_id then return end
  local batch_key = batch_key_prefix .. batch_id
  if redis.call('EXISTS', batch_key) == 1 then
    redis.call('HINCRBY', batch_key, field, by)
  end
end
