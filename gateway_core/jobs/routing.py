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


def next_fallback(config: GatewayConfig, requested: str, history: list[Attempt]) -> str | None:
    """The next partner in the requested partner's chain (depth-first) that has not been tried yet."""
    tried = set(tried_partners([a for a in since_last_replay(history) if a.outcome != "replayed"]))
    order: list[str] = []

    def walk(name: str) -> None:
        for nxt in config.partners[name].fallback:
            if nxt not in order:
                order.append(nxt)
                walk(nxt)

    walk(requested)
    for name in order:
        if name not in tried:
            return name
    return None


def decide(
    config: GatewayConfig,
    requested: str,
    partner: str,
    history: list[Attempt],
    response: PartnerResponse,
    rng: random.Random | None = None,
    *,
    breaker_open: bool = False,
) -> Decision:
    """Retry here while retryable tries remain; else (or while the breaker is open) the next fallback."""
    history = since_last_replay(history)
    partner_config = config.partners[partner]
    policy = partner_config.retry
    tries_here = sum(1 for a in history if a.partner == partner and a.outcome not in ("redelivered", "replayed"))
    fallback = next_fallback(config, requested, history)
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
    return Decision("dead_letter", partner, 0.0, f"{partner}: {why}; no fallback left")
