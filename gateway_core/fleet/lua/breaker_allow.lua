-- May a call go to the partner? A closed breaker lets every call through. An open one refuses them until its
-- cooldown has passed; then it turns half-open and lets exactly one probe call through at a time (a probe that
-- does not report back within probe_ttl_s lets the next one through).
--
-- KEYS[1] breaker      the breaker hash (fields `state`, `opened_at`, `probe_until`)
-- ARGV[1] cooldown_s   seconds an opened breaker refuses every call
-- ARGV[2] probe_ttl_s  seconds a probe has to report its outcome
--
-- Returns 'call' (closed), 'probe' (this call decides) or 'open' (skip this partner).
local breaker = KEYS[1]
local cooldown_s = tonumber(ARGV[1])
local probe_ttl_s = tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HGET', breaker, 'state') or 'closed'
if state == 'closed' then return 'call' end
local opened_at = tonumber(redis.call('HGET', breaker, 'opened_at')) or 0
local probe_until = tonumber(redis.call('HGET', breaker, 'probe_until')) or 0
if now - opened_at < cooldown_s then return 'open' end
if probe_until > now then return 'open' end
redis.call('HSET', breaker, 'state', 'half_open', 'probe_until', tostring(now + probe_ttl_s))
return 'probe'
