"""What happens after a failed call: retry here, fall back to the next partner, or dead-letter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from gateway_core.config import GatewayConfig
from gateway_core.jobs.backoff import backoff_delay
from gateway_core.jobs.models import Attempt, since_last_replay
from gateway_core.partners.adapters.base import Outcome, PartnerResponse


@dataclass(frozen=True)
class Decision:
    action: Literal["retry", "fallback", "dead_letter"]
    partner: str
    delay_s: float = 0.0
    reason: str = ""


def tried_partners(history: list[Attempt]) -> list[str]:
    seen: list[str] = []
    for attempt in history:
        if attempt.partner not in seen:
            seen.append(attempt.partner)
    return seen


def fallback_chain(config: GatewayConfig, requested: str) -> list[str]:
    """The requested partner's fallback chain, depth-first, each partner once."""
    order: list[str] = []

    def walk(name: str) -> None:
        for nxt in config.partners[name].fallback:
            if nxt not in order:
                order.append(nxt)
                walk(nxt)

    walk(requested)
    return order


def allowed_partners(config: GatewayConfig, tenant: str | None) -> frozenset[str] | None:
    """The partners `tenant` may use (its `partners:` list); None when it may use all (no list, or no tenant)."""
    found = config.tenants.get(tenant) if tenant is not None else None
    if found is None or found.partners is None:
        return None
    return frozenset(found.partners)


def barred_fallbacks(config: GatewayConfig, requested: str, history: list[Attempt], tenant: str | None) -> list[str]:
    """Untried partners of the chain the tenant may not use (the reason a chain can end early)."""
    allowed = allowed_partners(config, tenant)
    if allowed is None:
        return []
    tried = _tried(history)
    return [name for name in fallback_chain(config, requested) if name not in tried and name not in allowed]


def next_fallback(
    config: GatewayConfig, requested: str, history: list[Attempt], tenant: str | None = None
) -> str | None:
    """The next partner in the requested partner's chain (depth-first) that has not been tried yet and that the job's
    tenant may use (TenantConfig.partners; a chain goes on past a partner the tenant may not use)."""
    tried = _tried(history)
    allowed = allowed_partners(config, tenant)
    for name in fallback_chain(config, requested):
        if name not in tried and (allowed is None or name in allowed):
            return name
    return None


def _tried(history: list[Attempt]) -> set[str]:
    return set(tried_partners([a for a in since_last_replay(history) if a.outcome != "replayed"]))


def decide(
    config: GatewayConfig,
    requested: str,
    partner: str,
    history: list[Attempt],
    response: PartnerResponse,
    rng: random.Random | None = None,
    *,
    breaker_open: bool = False,
    tenant: str | None = None,
) -> Decision:
    """Retry here while retryable tries remain; else (or while the breaker is open) the next fallback the job's
    `tenant` may use; with none left, dead-letter (saying so when the tenant's partners list ended the chain)."""
    history = since_last_replay(history)
    partner_config = config.partners[partner]
    policy = partner_config.retry
    tries_here = sum(1 for a in history
                     if a.partner == partner and a.outcome not in ("redelivered", "replayed", "swept"))
    fallback = next_fallback(config, requested, history, tenant)
    if breaker_open and fallback:
        return Decision("fallback", fallback, 0.0, f"{partner}: circuit open; falling back to {fallback}")
    if breaker_open and tries_here < policy.max_attempts:
        return Decision("retry", partner, partner_config.breaker.cooldown_s, f"{partner}: circuit open; no fallback")
    patient = response.retry_after_s is None or response.retry_after_s <= policy.max_delay_s
    if response.outcome is Outcome.RETRYABLE and tries_here < policy.max_attempts and patient:
        delay = backoff_delay(tries_here, policy.base_delay_s, policy.max_delay_s, response.retry_after_s, rng)
        return Decision("retry", partner, delay, response.error or "retryable failure")
    if response.outcome is Outcome.FATAL:
        why = "fatal error"
    elif not patient:
        why = f"asked to wait {response.retry_after_s:g}s, over max_delay_s"
    else:
        why = f"{tries_here} attempts failed"
    if response.error:
        why += f" (last: {response.error})"
    if fallback:
        return Decision("fallback", fallback, 0.0, f"{partner}: {why}; falling back to {fallback}")
    barred = barred_fallbacks(config, requested, history, tenant)
    if barred:
        why += f"; no fallback left that tenant {tenant!r} may use (not {', '.join(barred)})"
    else:
        why += "; no fallback left"
    return Decision("dead_letter", partner, 0.0, f"{partner}: {why}")
