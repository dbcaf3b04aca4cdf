"""gateway_core.jobs.redelivery: a run must fit inside the broker's visibility timeout."""

from __future__ import annotations

from gateway_core.config import GatewayConfig
from gateway_core.jobs.redelivery import visibility_timeout_problem
from gateway_core.settings import Settings


def _config(timeout_s: float, repairs: int) -> GatewayConfig:
    return GatewayConfig.model_validate({
        "partners": {"p": {"adapter": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                           "timeout_s": timeout_s, "contract_repairs": repairs}},
        "tenants": {"t": {"api_key": "k"}},
    })


def test_calls_and_repairs_that_fit_are_accepted() -> None:
    assert visibility_timeout_problem(Settings(visibility_timeout_s=300), _config(60, 1)) is None
    assert visibility_timeout_problem(Settings(visibility_timeout_s=10), _config(4, 1)) is None


def test_a_call_with_its_repairs_reaching_the_timeout_is_named_with_the_fix() -> None:
    problem = visibility_timeout_problem(Settings(visibility_timeout_s=120), _config(40, 2))
    assert problem is not None
    assert problem.startswith("partner 'p': one attempt can call it for 120 s (timeout_s 40 x (1 + contract_repairs 2")
    assert problem.endswith("raise FEDGATE_VISIBILITY_TIMEOUT_S or lower the partner's timeout_s")
