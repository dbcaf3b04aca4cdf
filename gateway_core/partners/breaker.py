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

from gateway_core.config import BreakerPolicy
from gateway_core.fleet import keys
from gateway_core.fleet.lua import script


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreakers:
    """Each process trusts a 'closed' answer for `CLOSED_CACHE_S`, so the hot path costs no round trip."""

    CLOSED_CACHE_S = 0.25

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._allow = client.register_script(script("breaker_allow"))
        self._record = client.register_script(script("breaker_record"))
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
        answer = str(await self._allow(keys=[keys.breaker(partner)], args=[policy.cooldown_s, policy.probe_timeout_s]))
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
