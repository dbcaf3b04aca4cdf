"""Distributed partner budgets: token buckets in Redis, shared by every worker on every host.

Two steps, each one atomic Lua script with Redis TIME as the clock:
- reserve: a job takes its place in line in the partner's requests/min and tokens/min buckets. A bucket may go
  into debt; the reply says how long until the reservation is covered, and the job waits that long in the delay
  queue (not in a worker). Reservations are handed out in arrival order, so waiting jobs resume in order.
- admit: right before the call, a second pair of buckets that never goes into debt checks the actual send.
  Jobs that come back late (a slow host, a busy loop) would otherwise call in a bunch; admission spreads them
  out again, so the partner never sees more than its rate plus a half-second burst.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway_core.config import PartnerConfig, RateLimits, TenantConfig
from gateway_core.fleet import keys
from gateway_core.fleet.lua import script

BURST_SECONDS = 0.5
ADMISSION_SUFFIX = ":admit"


@dataclass(frozen=True)
class BucketSpec:
    key: str
    rate_per_s: float
    capacity: float


def bucket_specs(partner: PartnerConfig) -> tuple[BucketSpec | None, BucketSpec | None]:
    """(requests bucket, tokens bucket) for a partner; None where the config sets no limit.

    Capacity is half a second's worth: a full minute's burst would let a fresh bucket send up to twice the
    limit within one minute, which a partner counting over a sliding minute answers with 429s.
    """
    return _specs(partner.limits, partner.name)


def tenant_bucket_specs(tenant: TenantConfig | None) -> tuple[BucketSpec | None, BucketSpec | None]:
    """A tenant's own budget across every partner it uses (optional)."""
    return _specs(tenant.limits, f"tenant:{tenant.name}") if tenant is not None else (None, None)


def _specs(limits: RateLimits, owner: str) -> tuple[BucketSpec | None, BucketSpec | None]:
    requests = tokens = None
    if limits.requests_per_minute:
        rate = limits.requests_per_minute / 60
        requests = BucketSpec(keys.bucket(owner, "requests"), rate, max(1.0, rate * BURST_SECONDS))
    if limits.tokens_per_minute:
        rate = limits.tokens_per_minute / 60
        tokens = BucketSpec(keys.bucket(owner, "tokens"), rate, max(1.0, rate * BURST_SECONDS))
    return requests, tokens


class PartnerBudgets:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._take = client.register_script(script("bucket_take"))
        self._adjust = client.register_script(script("bucket_adjust"))
        self._block = client.register_script(script("bucket_block"))

    async def reserve(self, partner: PartnerConfig, estimated_tokens: int, tenant: TenantConfig | None = None) -> float:
        """Reserve one request and the estimated tokens; returns seconds until the reservation is covered."""
        return await self._run("reserve", partner, tenant, estimated_tokens, "")

    async def admit(self, partner: PartnerConfig, estimated_tokens: int, tenant: TenantConfig | None = None) -> float:
        """Admit the call now (0.0), or say how many seconds until it may go; nothing is taken then."""
        return await self._run("admit", partner, tenant, estimated_tokens, ADMISSION_SUFFIX)

    async def _run(
        self, mode: str, partner: PartnerConfig, tenant: TenantConfig | None, estimated_tokens: int, suffix: str
    ) -> float:
        requests, tokens = bucket_specs(partner)
        tenant_requests, tenant_tokens = tenant_bucket_specs(tenant)
        costs = (
            (requests, 1.0),
            (tokens, float(estimated_tokens)),
            (tenant_requests, 1.0),
            (tenant_tokens, float(estimated_tokens)),
        )
        specs = [(s, c) for s, c in costs if s is not None]
        if not specs:
            return 0.0
        args: list[str | float] = [mode]
        for spec, cost in specs:
            args += [spec.rate_per_s, spec.capacity, cost]
        wait_us = await self._take(keys=[s.key + suffix for s, _ in specs], args=args)
        return int(wait_us) / 1_000_000

    async def reconcile(self, partner: PartnerConfig, estimated_tokens: int, actual_tokens: int) -> None:
        _, tokens = bucket_specs(partner)
        if tokens is not None and actual_tokens != estimated_tokens:
            await self._adjust(keys=[tokens.key], args=[estimated_tokens - actual_tokens, tokens.capacity])

    async def block(self, partner: PartnerConfig, seconds: float) -> None:
        for spec in bucket_specs(partner):
            if spec is not None:
                await self._block(keys=[spec.key], args=[seconds])
                await self._block(keys=[spec.key + ADMISSION_SUFFIX], args=[seconds])

    async def level(self, partner: PartnerConfig) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, spec in zip(("requests", "tokens"), bucket_specs(partner), strict=True):
            if spec is not None:
                raw = await self.redis.hget(spec.key, "level")
                out[name] = float(raw) if raw is not None else spec.capacity
        return out


def estimate_tokens(text_chars: int, max_output_tokens: int) -> int:
    """Before the call: about four characters a token for the prompt, plus the output allowance."""
    return max(1, text_chars // 4) + max_output_tokens
