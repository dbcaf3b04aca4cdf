-- Read one chunk of a place where job messages wait, a Celery queue (a kombu Redis list) or kombu's unacked hash,
-- and return the task id of each message in it ("<job_id>-<attempt>", the first "id" in a Celery message: its
-- headers'), never the messages themselves. The sweeper calls again with the returned cursor until it is '0', so
-- that no call holds Redis for long.
--
-- KEYS[1] source  a queue list (kind 'list') or kombu's unacked hash (kind 'hash': delivery tag -> JSON
--                 [message, exchange, routing_key])
-- ARGV[1] kind    'list' or 'hash'
-- ARGV[2] cursor  where to start: a list index (0 at first), or an HSCAN cursor ('0' at first)
-- ARGV[3] count   how many entries to read in this call (about, for a hash)
--
-- Returns {next cursor ('0': the whole source has been read), the task ids read, separated by spaces}; a message
-- whose id cannot be read adds nothing.
local source = KEYS[1]
local kind = ARGV[1]
local cursor = ARGV[2]
local count = tonumber(ARGV[3])

local ids = {}
local function note(message)
  local id = string.match(message, '"id": ?"([^"]*)"')
  if id then ids[#ids + 1] = id end
end

local next_cursor = '0'
if kind == 'list' then
  local start = tonumber(cursor)
  local items = redis.call('LRANGE', source, start, start + count - 1)
  for _, message in ipairs(items) do note(message) end
  if #items == count then next_cursor = tostring(start + count) end
else
  local reply = redis.call('HSCAN', source, cursor, 'COUNT', count)
  next_cursor = reply[1]
  local entries = reply[2]
  for i = 2, #entries, 2 do note(entries[i]) end
end
return {next_cursor, table.concat(ids, ' ')}
