"""The `webhooks:` section of the config, and what to do after an attempt: done, retry (when), or give up."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway_core.jobs.backoff import backoff_delay, parse_retry_after


class WebhookSettings(BaseModel):
    """The `webhooks:` section of the config: where deliveries may go and how they retry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[str] = Field(
        default_factory=list,
        description="CIDRs (127.0.0.0/8, ::1/128, 10.1.2.3) or host names that may receive webhooks although "
        "they are private, loopback or link-local (SSRF protection refuses them otherwise)",
    )
    max_attempts: int = Field(default=8, ge=1, le=50, description="Delivery attempts before the dead-letter queue")
    base_delay_s: float = Field(default=5.0, gt=0, description="First backoff ceiling; doubles per attempt")
    max_delay_s: float = Field(default=3600.0, gt=0, description="Backoff ceiling")


def webhook_settings(config: Any) -> WebhookSettings:
    """A config's `webhooks:` section (its defaults for anything that has none)."""
    found = getattr(config, "webhooks", None)
    return found if isinstance(found, WebhookSettings) else WebhookSettings()


RETRY_AFTER_CEILING_S = 3600.0  # a Retry-After is honoured up to an hour; longer waits are capped there


Decision = Literal["done", "retry", "give_up"]


def delivery_decision(
    status_code: int | None,
    retry_after: str | None,
    attempt: int,
    max_attempts: int,
    base_s: float,
    cap_s: float,
    rng: random.Random | None = None,
) -> tuple[Decision, float]:
    """What to do after attempt number `attempt` (1-based) answered `status_code` (None: no answer).

    2xx: done. 410 Gone: give up now. Anything else (429, 502, 504, other 4xx/5xx, timeouts, connection errors):
    retry after a full-jitter exponential backoff, never sooner than Retry-After, until `max_attempts` are spent.
    """
    if status_code is not None and 200 <= status_code < 300:
        return "done", 0.0
    if status_code == 410 or attempt >= max_attempts:
        return "give_up", 0.0
    wait = parse_retry_after(retry_after)
    return "retry", backoff_delay(attempt, base_s, cap_s, None if wait is None else min(wait, RETRY_AFTER_CEILING_S),
                                  rng)
