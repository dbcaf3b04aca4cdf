-- Count a tenant's uploaded files against its quota, and take a place for a new one if it fits.
-- Entries whose file expired or was deleted (retention, DELETE /v1/files/{id}) are dropped first, so the quota only
-- counts files that still exist. The new file's hash is written before this runs (and deleted by the caller when
-- the answer is a refusal), so a concurrent upload's check sees it exist.
--
-- KEYS[1] index         sorted set: the tenant's file ids, scored by when each expires (seconds)
-- KEYS[2] sizes         hash: file id -> its size in bytes
-- ARGV[1] now           seconds since the epoch
-- ARGV[2] file_prefix   the files' key prefix ('fg:file:'), joined to an id to name its hash
-- ARGV[3] file_id       the new file, or '' only to read what is used
-- ARGV[4] size          the new file's bytes
-- ARGV[5] expires_at    when the new file expires (its score)
-- ARGV[6] max_files     files the tenant may keep
-- ARGV[7] max_bytes     bytes the tenant may keep
-- ARGV[8] ttl_s         how long the index lives after its last change (the files' own TTL)
--
-- Returns {verdict, files, bytes}: verdict 1 taken (files and bytes include the new file), 0 over the file count,
-- -1 over the bytes (files and bytes as they are, without it); with no file_id, {1, files, bytes} as they are.
local index = KEYS[1]
local sizes = KEYS[2]
local now = tonumber(ARGV[1])
local file_prefix = ARGV[2]
local file_id = ARGV[3]
local size = tonumber(ARGV[4])
local expires_at = ARGV[5]
local max_files = tonumber(ARGV[6])
local max_bytes = tonumber(ARGV[7])
local ttl_s = ARGV[8]

local listed = redis.call('ZRANGE', index, 0, -1, 'WITHSCORES')
for i = 1, #listed, 2 do
  local id = listed[i]
  if tonumber(listed[i + 1]) <= now or redis.call('EXISTS', file_prefix .. id) == 0 then
    redis.call('ZREM', index, id)
    redis.call('HDEL', sizes, id)
  end
end
local files = redis.call('ZCARD', index)
local used = 0
for _, bytes in ipairs(redis.call('HVALS', sizes)) do
  used = used + tonumber(bytes)
end
if file_id == '' then return {1, files, used} end
if files + 1 > max_files then return {0, files, used} end
if used + size > max_bytes then return {-1, files, used} end
redis.call('ZADD', index, expires_at, file_id)
redis.call('HSET', sizes, file_id, size)
redis.call('EXPIRE', index, ttl_s)
redis.call('EXPIRE', sizes, ttl_s)
return {1, files + 1, used + size}
