"""A circuit breaker per partner, shared across the fleet through Redis.

Closed: calls flow; outcomes are counted in one-second slots over a sliding window. When the window holds
at least `min_calls` calls and the failure rate reaches `failure_rate`, the breaker opens: jobs go straight
to their fallback. After `cooldown_s`, one probe call is let through (half-open); its success closes the
breaker, its failure opens it again.
"""

from __future__ import annotations

import time
from enum import StrEnum

import redis.asyncio as aioredis

from gateway_core import keys
from gateway_core.config import BreakerPolicy


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# KEYS: breaker hash, outcome slots hash. ARGV: cooldown_s, probe_ttl_s. Returns 'call' | 'probe' | 'open'.
_ALLOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return 'call' end
local opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at')) or 0
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until')) or 0
if now - opened_at < tonumber(ARGV[1]) then return 'open' end
if probe_until > now then return 'open' end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', tostring(now + tonumber(ARGV[2])))
return 'probe'
"""

# KEYS: breaker hash, slots hash. ARGV: ok('1'|'0'), window_s, min_calls, failure_rate, was_probe('1'|'0').
# Returns the state after recording.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local window = tonumber(ARGV[2])
if ARGV[5] == '1' then
  if ARGV[1] == '1' then
    redis.call('DEL', KEYS[1], KEYS[2])
    return 'closed'
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(now), 'probe_until', '0')
  return 'open'
end
local field = (ARGV[1] == '1') and (now .. ':ok') or (now .. ':fail')
redis.call('HINCRBY', KEYS[2], field, 1)
redis.call('EXPIRE', KEYS[2], window * 2)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state ~= 'closed' then return state end
local calls, failures = 0, 0
local slots = redis.call('HGETALL', KEYS[2])
for i = 1, #slots, 2 do
  local sep = string.find(slots[i], ':')
  local second = tonumber(string.sub(slots[i], 1, sep - 1))
  if now - second < window then
    local n = tonumber(slots[i + 1])
    calls = calls + n
    if string.sub(slots[i], sep + 1) == 'fail' then failures = failures + n end
  else
    redis.call('HDEL', KEYS[2], slots[i])
  end
end
if calls >= tonumber(ARGV[3]) and failures / calls >= tonumber(ARGV[4]) then
  local t2 = redis.call('TIME')
  local exact = tonumber(t2[1]) + tonumber(t2[2]) / 1000000
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', tostring(exact), 'probe_until', '0')
  return 'open'
end
return 'closed'
"""


class CircuitBreakers:
    """Each process trusts a 'closed' answer for `CLOSED_CACHE_S`, so the hot path costs no round trip."""

    CLOSED_CACHE_S = 0.25

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._allow = client.register_script(_ALLOW)
        self._record = client.register_script(_RECORD)
        self._closed_until: dict[str, float] = {}
        self._pending_ok: dict[str, int] = {}

    def note_success(self, partner: str, policy: BreakerPolicy) -> None:
        """Count a success locally; `flush_successes` writes the counts in one call per partner.

        Successes only dilute the failure rate, so writing them a fraction of a second late is harmless,
        and it saves a round trip per call. Failures are recorded at once: they are what opens a breaker.
        """
        if policy.enabled:
            self._pending_ok[partner] = self._pending_ok.get(partner, 0) + 1

    async def flush_successes(self) -> None:
        pending, self._pending_ok = self._pending_ok, {}
        if not pending:
            return
        now = int(time.time())
        async with self.redis.pipeline(transaction=False) as pipe:
            for partner, count in pending.items():
                slots = self._keys(partner)[1]
                pipe.hincrby(slots, f"{now}:ok", count)
                pipe.expire(slots, 3600)
            await pipe.execute()

    @staticmethod
    def _keys(partner: str) -> list[str]:
        return [keys.breaker(partner), keys.breaker(partner) + ":slots"]

    async def allow(self, partner: str, policy: BreakerPolicy) -> str:
        """'call' (closed), 'probe' (half-open: this call decides) or 'open' (skip this partner)."""
        if not policy.enabled or self._closed_until.get(partner, 0.0) > time.monotonic():
            return "call"
        answer = str(await self._allow(keys=self._keys(partner), args=[policy.cooldown_s, policy.probe_timeout_s]))
        if answer == "call":
            self._closed_until[partner] = time.monotonic() + self.CLOSED_CACHE_S
        return answer

    async def record(self, partner: str, policy: BreakerPolicy, ok: bool, probe: bool = False) -> BreakerState:
        if not policy.enabled:
            return BreakerState.CLOSED
        state = BreakerState(str(await self._record(
            keys=self._keys(partner),
            args=["1" if ok else "0", policy.window_s, policy.min_calls, policy.failure_rate, "1" if probe else "0"],
        )))
        if state is not BreakerState.CLOSED:
            self._closed_until.pop(partner, None)
        return state

    async def state(self, partner: str) -> BreakerState:
        raw = await self.redis.hget(keys.breaker(partner), "state")
        return BreakerState(str(raw)) if raw else BreakerState.CLOSED

    async def reset(self, partner: str) -> None:
        await self.redis.delete(*self._keys(partner))
