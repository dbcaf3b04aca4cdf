"""After a failed call: retry here (the backoff itself: test_backoff.py), fall back along the chain, or dead-letter."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway_core.config import GatewayConfig
from gateway_core.jobs.models import Attempt
from gateway_core.jobs.routing import decide, next_fallback, tried_partners
from gateway_core.partners.adapters.base import Outcome, PartnerResponse

RETRYABLE = PartnerResponse(Outcome.RETRYABLE, status_code=503, error="HTTP 503: overloaded")
FATAL = PartnerResponse(Outcome.FATAL, status_code=401, error="HTTP 401: bad key")


def make_config(
    chains: dict[str, list[str]], max_attempts: int = 3, base: float = 0.5, cap: float = 4.0
) -> GatewayConfig:
    partners: dict[str, Any] = {
        name: {
            "name": name,
            "adapter": "openai",
            "base_url": f"http://{name}.example/v1",
            "model": "m",
            "retry": {"max_attempts": max_attempts, "base_delay_s": base, "max_delay_s": cap},
            "fallback": fallback,
        }
        for name, fallback in chains.items()
    }
    return GatewayConfig.model_validate({"partners": partners, "tenants": {"t": {"name": "t", "api_key": "k"}}})


def attempts(*partners: str, outcome: str = "retryable") -> list[Attempt]:
    return [
        Attempt(partner=p, attempt=i + 1, outcome=outcome, started_at=0.0, duration_ms=1.0)  # type: ignore[arg-type]
        for i, p in enumerate(partners)
    ]


# --- retry within max_attempts --------------------------------------------------------------------------------


@pytest.mark.parametrize("tries", [1, 2])
def test_retryable_within_max_attempts_retries_the_same_partner(tries: int) -> None:
    config = make_config({"a": ["b"], "b": []}, max_attempts=3, base=0.5, cap=4.0)
    for seed in range(50):
        decision = decide(config, "a", "a", attempts(*["a"] * tries), RETRYABLE, random.Random(seed))
        assert decision.action == "retry"
        assert decision.partner == "a"
        assert 0 <= decision.delay_s <= min(4.0, 0.5 * 2 ** (tries - 1))
        assert decision.reason == "HTTP 503: overloaded"


def test_retry_delay_never_exceeds_the_cap() -> None:
    config = make_config({"a": []}, max_attempts=30, base=1.0, cap=2.5)
    for seed in range(200):
        decision = decide(config, "a", "a", attempts(*["a"] * 20), RETRYABLE, random.Random(seed))
        assert decision.action == "retry"
        assert 0 <= decision.delay_s <= 2.5


def test_retry_honours_retry_after() -> None:
    config = make_config({"a": []}, max_attempts=5, base=0.1, cap=10.0)
    response = PartnerResponse(Outcome.RETRYABLE, status_code=429, retry_after_s=3.0, error="HTTP 429: slow down")
    for seed in range(50):
        decision = decide(config, "a", "a", attempts("a"), response, random.Random(seed))
        assert decision.action == "retry"
        assert 3.0 <= decision.delay_s <= 10.0


def test_redelivered_entries_do_not_count_as_tries() -> None:
    config = make_config({"a": ["b"], "b": []}, max_attempts=2)
    history = [*attempts("a"), *attempts("a", outcome="redelivered"), *attempts("a", outcome="redelivered")]
    assert decide(config, "a", "a", history, RETRYABLE, random.Random(1)).action == "retry"


# --- exhausted: fall back depth-first, then dead-letter ---------------------------------------------------------


def test_exhausted_retries_fall_back_to_the_next_partner() -> None:
    config = make_config({"a": ["b"], "b": []}, max_attempts=3)
    decision = decide(config, "a", "a", attempts("a", "a", "a"), RETRYABLE, random.Random(0))
    assert decision.action == "fallback"
    assert decision.partner == "b"
    assert decision.delay_s == 0.0
    assert "3 attempts failed" in decision.reason and "b" in decision.reason


def test_fallback_order_is_depth_first_over_the_requested_chain() -> None:
    # a -> [b, c]; b -> [d]: the order is b, d, c.
    config = make_config({"a": ["b", "c"], "b": ["d"], "c": [], "d": []}, max_attempts=1)
    history = attempts("a")
    order = []
    current = "a"
    while True:
        decision = decide(config, "a", current, history, RETRYABLE, random.Random(0))
        if decision.action == "dead_letter":
            break
        assert decision.action == "fallback"
        order.append(decision.partner)
        current = decision.partner
        history += attempts(current)
    assert order == ["b", "d", "c"]
    assert decision.partner == "c"
    assert "no fallback left" in decision.reason


def test_fallback_skips_partners_already_tried() -> None:
    config = make_config({"a": ["b", "c"], "b": [], "c": []}, max_attempts=1)
    history = attempts("a", "b")
    assert next_fallback(config, "a", history) == "c"
    decision = decide(config, "a", "b", history, RETRYABLE, random.Random(0))
    assert (decision.action, decision.partner) == ("fallback", "c")


def test_chain_follows_the_requested_partner_not_the_current_one() -> None:
    # b's own chain lists e, but the job was requested for a, whose chain is a -> b -> c.
    config = make_config({"a": ["b"], "b": ["c"], "c": [], "e": []}, max_attempts=1)
    history = attempts("a", "b")
    assert decide(config, "a", "b", history, RETRYABLE, random.Random(0)).partner == "c"


def test_shared_partner_in_a_diamond_is_tried_once() -> None:
    config = make_config({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, max_attempts=1)
    assert next_fallback(config, "a", attempts("a", "b", "d")) == "c"
    assert next_fallback(config, "a", attempts("a", "b", "d", "c")) is None


def test_no_fallback_configured_dead_letters_after_the_last_try() -> None:
    config = make_config({"a": []}, max_attempts=2)
    decision = decide(config, "a", "a", attempts("a", "a"), RETRYABLE, random.Random(0))
    assert decision.action == "dead_letter"
    assert decision.partner == "a"
    assert "2 attempts failed" in decision.reason and "no fallback left" in decision.reason


def test_fallback_partner_gets_its_own_retries() -> None:
    config = make_config({"a": ["b"], "b": []}, max_attempts=2)
    history = attempts("a", "a", "b")
    decision = decide(config, "a", "b", history, RETRYABLE, random.Random(0))
    assert (decision.action, decision.partner) == ("retry", "b")
    decision = decide(config, "a", "b", history + attempts("b"), RETRYABLE, random.Random(0))
    assert decision.action == "dead_letter"


# --- fatal: no retry, straight to fallback ----------------------------------------------------------------------


def test_fatal_falls_back_immediately() -> None:
    config = make_config({"a": ["b"], "b": []}, max_attempts=5)
    decision = decide(config, "a", "a", attempts("a", outcome="fatal"), FATAL, random.Random(0))
    assert (decision.action, decision.partner) == ("fallback", "b")
    assert "fatal" in decision.reason


def test_fatal_with_no_fallback_dead_letters_immediately() -> None:
    config = make_config({"a": []}, max_attempts=5)
    decision = decide(config, "a", "a", attempts("a", outcome="fatal"), FATAL, random.Random(0))
    assert decision.action == "dead_letter"
    assert "fatal" in decision.reason


def test_tried_partners_keeps_first_seen_order() -> None:
    assert tried_partners(attempts("a", "a", "c", "b", "c")) == ["a", "c", "b"]
