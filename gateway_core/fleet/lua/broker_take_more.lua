-- Take more messages from a Celery queue (a kombu Redis list) that BRPOP has just answered from, and record each
-- in kombu's unacked index and hash exactly as kombu's QoS.append does, so that an unacknowledged message is
-- restored the same way. The message text is embedded as is, never re-encoded.
--
-- KEYS[1] queue          the list to RPOP from
-- KEYS[2] unacked_index  kombu's unacked index: sorted set of delivery tags (score: unix seconds delivered)
-- KEYS[3] unacked        kombu's unacked hash: delivery tag -> JSON [raw message, exchange, routing key]
-- ARGV[1] count          take at most this many messages
-- ARGV[2] delivered_at   the index score (unix seconds)
--
-- Returns the messages taken, oldest first (possibly none).
local queue = KEYS[1]
local unacked_index = KEYS[2]
local unacked = KEYS[3]
local count = ARGV[1]
local delivered_at = ARGV[2]

local items = redis.call('RPOP', queue, count)
if not items then return {} end
for _, item in ipairs(items) do
  local props = cjson.decode(item)['properties']
  local info = props['delivery_info']
  local tag = props['delivery_tag']
  redis.call('ZADD', unacked_index, delivered_at, tag)
  redis.call('HSET', unacked, tag,
    '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
end
return items
