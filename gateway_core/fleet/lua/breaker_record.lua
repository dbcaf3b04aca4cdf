-- Record a call's outcome. A probe's outcome decides alone: success closes the breaker (and forgets the window),
-- failure opens it again. Any other outcome is counted in one-second slots; a closed breaker whose window holds at
-- least min_calls calls with a failure rate of at least failure_rate opens. Slots older than the window go.
--
-- KEYS[1] breaker       the breaker hash (fields `state`, `opened_at`, `probe_until`)
-- KEYS[2] slots         the outcome counts: field "<unix second>:ok" or "<unix second>:fail"
-- ARGV[1] ok            '1' for a success, '0' for a failure
-- ARGV[2] window_s      the sliding window, seconds
-- ARGV[3] min_calls     calls the window must hold before the breaker may open
-- ARGV[4] failure_rate  the failure rate (0 to 1) that opens it
-- ARGV[5] was_probe     '1' when this was the half-open breaker's probe call, else '0'
--
-- Returns the breaker's state after recording: 'closed', 'open' or 'half_open'.
local breaker = KEYS[1]
local slots = KEYS[2]
local ok = ARGV[1] == '1'
local window_s = tonumber(ARGV[2])
local min_calls = tonumber(ARGV[3])
local failure_rate = tonumber(ARGV[4])
local was_probe = ARGV[5] == '1'

local t = redis.call('TIME')
local now = tonumber(t[1])
if was_probe then
  if ok then
    redis.call('DEL', breaker, slots)
    return 'closed'
  end
  redis.call('HSET', breaker, 'state', 'open', 'opened_at', tostring(now), 'probe_until', '0')
  return 'open'
end
local field = ok and (now .. ':ok') or (now .. ':fail')
redis.call('HINCRBY', slots, field, 1)
redis.call('EXPIRE', slots, window_s * 2)
local state = redis.call('HGET', breaker, 'state') or 'closed'
if state ~= 'closed' then return state end
local calls, failures = 0, 0
local counted = redis.call('HGETALL', slots)
for i = 1, #counted, 2 do
  local sep = string.find(counted[i], ':')
  local second = tonumber(string.sub(counted[i], 1, sep - 1))
  if now - second < window_s then
    local n = tonumber(counted[i + 1])
    calls = calls + n
    if string.sub(counted[i], sep + 1) == 'fail' then failures = failures + n end
  else
    redis.call('HDEL', slots, counted[i])
  end
end
if calls >= min_calls and failures / calls >= failure_rate then
  local t2 = redis.call('TIME')
  local exact = tonumber(t2[1]) + tonumber(t2[2]) / 1000000
  redis.call('HSET', breaker, 'state', 'open', 'opened_at', tostring(exact), 'probe_until', '0')
  return 'open'
end
return 'closed'
