"""How long to wait before trying again: exponential backoff with full jitter, and the wait a server asks for.

One home for both, used by partner calls (gateway_core.jobs.routing, gateway_core.partners.adapters) and webhook
deliveries (gateway_core.webhooks).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

_RNG = random.Random()


def backoff_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after `attempt` failed tries: full jitter, uniform in [0, min(cap_s, base_s * 2^(attempt-1))]
    (AWS's "full jitter"), and never sooner than `retry_after_s` when the other side asked for a wait."""
    jittered = (rng or _RNG).uniform(0, min(cap_s, base_s * 2 ** max(0, attempt - 1)))
    if retry_after_s is not None:
        return max(retry_after_s, jittered)
    return jittered


def parse_retry_after(source: Mapping[str, str] | str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from a response's headers or from one Retry-After value; never negative, None when absent
    or unreadable.

    Headers (a case-insensitive mapping such as `httpx.Headers`): `retry-after-ms` (OpenAI's, in milliseconds) wins
    over `Retry-After`. A Retry-After value is delay-seconds or an HTTP date, counted from `now` (default: the clock).
    """
    if source is None or isinstance(source, str):
        return _retry_after_value(source, now)
    millis = _seconds(source.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    return _retry_after_value(source.get("retry-after"), now)


def _seconds(value: str | None) -> float | None:
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _retry_after_value(value: str | None, now: float | None) -> float | None:
    seconds = _seconds(value)
    if seconds is not None or not value or not value.strip():
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
