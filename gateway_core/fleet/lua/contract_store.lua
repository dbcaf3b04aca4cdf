-- Store one version of a contract unless that version number is already taken (a concurrent add won it), and
-- index the contract by name.
--
-- KEYS[1] contract    the contract's hash: version number -> stored version (JSON)
-- KEYS[2] index       sorted set of contract names
-- ARGV[1] version     the version number to store
-- ARGV[2] payload     the stored version (JSON)
-- ARGV[3] created_at  the index score (unix seconds)
-- ARGV[4] name        the contract's name (the index member)
--
-- Returns 1 when stored, 0 when the version number was taken (nothing written).
local contract = KEYS[1]
local index = KEYS[2]
local version = ARGV[1]
local payload = ARGV[2]
local created_at = ARGV[3]
local name = ARGV[4]

if redis.call('HSETNX', contract, version, payload) == 1 then
  redis.call('ZADD', index, created_at, name)
  return 1
end
return 0
