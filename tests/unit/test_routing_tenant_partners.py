"""The fallback chain stays inside the partners the job's tenant may use (TenantConfig.partners; unset: all)."""

from __future__ import annotations

import random
from typing import Any

from gateway_core.config import GatewayConfig
from gateway_core.jobs.models import Attempt
from gateway_core.jobs.routing import decide, next_fallback
from gateway_core.partners.adapters.base import Outcome, PartnerResponse

FATAL = PartnerResponse(Outcome.FATAL, status_code=400, error="HTTP 400: bad request")
RETRYABLE = PartnerResponse(Outcome.RETRYABLE, status_code=503, error="HTTP 503: overloaded")


def config_with(chains: dict[str, list[str]], tenants: dict[str, list[str] | None]) -> GatewayConfig:
    partners: dict[str, Any] = {
        name: {"name": name, "adapter": "openai", "base_url": f"http://{name}.example/v1", "model": "m",
               "retry": {"max_attempts": 1, "base_delay_s": 0.1, "max_delay_s": 1}, "fallback": fallback}
        for name, fallback in chains.items()
    }
    tenant_configs: dict[str, Any] = {
        name: {"name": name, "api_key": f"key-{name}", **({"partners": allowed} if allowed is not None else {})}
        for name, allowed in tenants.items()
    }
    return GatewayConfig.model_validate({"partners": partners, "tenants": tenant_configs})


def tried(*partners: str, outcome: str = "fatal") -> list[Attempt]:
    return [Attempt(partner=p, attempt=i + 1, outcome=outcome, started_at=0.0, duration_ms=1.0)  # type: ignore[arg-type]
            for i, p in enumerate(partners)]


def test_a_fatal_error_does_not_take_a_tenant_to_a_partner_it_may_not_use() -> None:
    config = config_with({"a": ["b"], "b": []}, {"only-a": ["a"], "anyone": None})
    decision = decide(config, "a", "a", tried("a"), FATAL, random.Random(0), tenant="only-a")
    assert decision.action == "dead_letter"
    assert decision.partner == "a"
    assert "tenant 'only-a' may use" in decision.reason and "not b" in decision.reason
    # the same chain for a tenant without a partners list falls back as before
    assert decide(config, "a", "a", tried("a"), FATAL, random.Random(0), tenant="anyone").partner == "b"


def test_the_chain_goes_on_past_a_partner_the_tenant_may_not_use() -> None:
    # a -> [b, c], b -> [d]: depth-first b, d, c; the tenant may use a, d and c.
    config = config_with({"a": ["b", "c"], "b": ["d"], "c": [], "d": []}, {"t": ["a", "c", "d"]})
    assert next_fallback(config, "a", tried("a"), "t") == "d"
    assert next_fallback(config, "a", tried("a", "d"), "t") == "c"
    assert next_fallback(config, "a", tried("a", "d", "c"), "t") is None
    decision = decide(config, "a", "c", tried("a", "d", "c"), RETRYABLE, random.Random(0), tenant="t")
    assert decision.action == "dead_letter" and "not b" in decision.reason


def test_an_open_breaker_does_not_fall_back_outside_the_tenants_partners() -> None:
    config = config_with({"a": ["b"], "b": []}, {"only-a": ["a"]})
    decision = decide(config, "a", "a", [], RETRYABLE, random.Random(0), breaker_open=True, tenant="only-a")
    assert (decision.action, decision.partner) == ("retry", "a")
    decision = decide(config, "a", "a", tried("a", outcome="breaker_open"), RETRYABLE, random.Random(0),
                      breaker_open=True, tenant="only-a")
    assert decision.action == "dead_letter"


def test_a_tenant_no_longer_in_the_config_is_not_restricted() -> None:
    """As dead-letter replay treats it: the config's tenants are the only source of a restriction."""
    config = config_with({"a": ["b"], "b": []}, {"t": ["a"]})
    assert next_fallback(config, "a", tried("a"), "gone") == "b"
