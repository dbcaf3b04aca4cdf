-- Count the entries of a hash (kombu's unacked deliveries, per routing key) or a sorted set (a delay queue, per
-- partner) without sending them back, one chunk per call so that no call holds Redis for long. The caller calls
-- again with the returned cursor until it is '0'.
--
-- KEYS[1] source  the hash (kind 'unacked') or the sorted set (kind 'delayed')
-- ARGV[1] kind    'unacked': values are kombu's JSON [message, exchange, routing_key], counted per routing key;
--                 'delayed': members are "job_id|partner|attempt", counted per partner
-- ARGV[2] cursor  the HSCAN / ZSCAN cursor to start from ('0' at first)
-- ARGV[3] budget  stop once about this many entries are counted
--
-- Returns {{name, count, name, count, ...}, entries counted, next cursor ('0': done)}; '?' names an entry whose
-- name could not be read.
local source = KEYS[1]
local kind = ARGV[1]
local cursor = ARGV[2]
local budget = tonumber(ARGV[3])
local SCAN_COUNT = 250

local scan = 'ZSCAN'
if kind == 'unacked' then scan = 'HSCAN' end
local tally, names, seen = {}, {}, 0
repeat
  local reply = redis.call(scan, source, cursor, 'COUNT', SCAN_COUNT)
  cursor = reply[1]
  local items = reply[2]
  for i = 1, #items, 2 do
    local name
    if kind == 'unacked' then
      -- kombu stores JSON [message, exchange, routing_key]: the routing key is the value's last string
      name = string.match(string.sub(items[i + 1], -200), '"([^"]*)"%s*%]%s*$')
    else
      -- delayed members are job_id|partner|attempt
      name = string.match(items[i], '^[^|]*|([^|]*)|')
    end
    name = name or '?'
    if not tally[name] then
      tally[name] = 0
      names[#names + 1] = name
    end
    tally[name] = tally[name] + 1
    seen = seen + 1
  end
until cursor == '0' or seen >= budget
local flat = {}
for _, name in ipairs(names) do
  flat[#flat + 1] = name
  flat[#flat + 1] = tally[name]
end
return {flat, seen, cursor}
