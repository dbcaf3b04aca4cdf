"""Metrics: the record_* calls, label values, the worker's /metrics endpoint, a scrape without Redis. The fleet state
read from a real redis-server is tested in tests/integration/test_metrics.py.

Series are recorded under random partner names: the prometheus_client registry is one per process."""

from __future__ import annotations

import secrets
import socket

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway_api.metrics_routes import FleetStateCollector
from gateway_core.fleet import metrics
from gateway_core.jobs.models import Usage


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def sample(name_: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name_, labels) or 0.0


def test_record_calls_count_by_partner_and_outcome() -> None:
    p = name("rec")
    metrics.record_call(p, "ok", 0.3)
    metrics.record_call(p, "retryable", 2.0)
    metrics.record_job_finished(p, "tenant-a", "succeeded", queue_wait_s=0.02, total_s=1.5)
    metrics.record_retry(p)
    metrics.record_fallback(p, "other-partner")
    metrics.record_redactions(p, {"EMAIL_ADDRESS": 2, "CREDIT_CARD": 1, "IBAN_CODE": 0})
    metrics.record_contract(p, "invoice@3", "repaired")
    metrics.record_tokens(p, Usage(prompt_tokens=12, completion_tokens=30), cost_usd=0.002)
    with metrics.calls_in_flight(p):
        assert sample("fedgate_partner_calls_in_flight", {"partner": p}) == 1
    assert sample("fedgate_partner_calls_in_flight", {"partner": p}) == 0

    assert sample("fedgate_partner_calls_total", {"partner": p, "outcome": "ok"}) == 1
    assert sample("fedgate_partner_calls_total", {"partner": p, "outcome": "retryable"}) == 1
    assert sample("fedgate_partner_call_seconds_count", {"partner": p}) == 2
    assert sample("fedgate_partner_call_seconds_sum", {"partner": p}) == pytest.approx(2.3)
    assert sample("fedgate_jobs_total", {"partner": p, "tenant": "tenant-a", "outcome": "succeeded"}) == 1
    assert sample("fedgate_queue_wait_seconds_count", {"partner": p}) == 1
    assert sample("fedgate_job_seconds_sum", {"partner": p}) == pytest.approx(1.5)
    assert sample("fedgate_retries_total", {"partner": p}) == 1
    assert sample("fedgate_fallbacks_total", {"from_partner": p, "to_partner": "other-partner"}) == 1
    assert sample("fedgate_redactions_total", {"partner": p, "entity_type": "EMAIL_ADDRESS"}) == 2
    assert sample("fedgate_redactions_total", {"partner": p, "entity_type": "CREDIT_CARD"}) == 1
    assert REGISTRY.get_sample_value("fedgate_redactions_total", {"partner": p, "entity_type": "IBAN_CODE"}) is None
    contract = {"partner": p, "contract": "invoice", "result": "repaired"}
    assert sample("fedgate_contract_validations_total", contract) == 1
    assert sample("fedgate_tokens_total", {"partner": p, "kind": "prompt"}) == 12
    assert sample("fedgate_tokens_total", {"partner": p, "kind": "completion"}) == 30
    assert sample("fedgate_cost_usd_total", {"partner": p}) == pytest.approx(0.002)


def test_label_values_are_names_never_content() -> None:
    assert metrics.label("sim-openai") == "sim-openai"
    assert metrics.label("EMAIL_ADDRESS") == "EMAIL_ADDRESS"
    for value in ("jane.roe@example.com", "Bearer sk-abc 123", "x" * 65, "", "line\nbreak", "<PERSON_1>"):
        assert metrics.label(value) == "other"
    p = name("lbl")
    metrics.record_job_finished(p, "my tenant key sk-123", "succeeded", None, 1.0)
    assert sample("fedgate_jobs_total", {"partner": p, "tenant": "other", "outcome": "succeeded"}) == 1
    with pytest.raises(ValueError, match="passed, repaired, failed"):
        metrics.record_contract(p, "invoice", "maybe")


def test_worker_endpoint_takes_the_next_port_when_one_is_busy() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        try:
            port = metrics.start_worker_metrics_server("127.0.0.1", taken, tries=8)
            assert port is not None and taken < port < taken + 8
            assert metrics.start_worker_metrics_server("127.0.0.1", taken) == port  # one endpoint per process
            p = name("srv")
            metrics.record_call(p, "fatal", 0.1)
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        finally:
            metrics.stop_worker_metrics_server()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("fedgate_partner_calls_total", (("outcome", "fatal"), ("partner", p)))] == 1


def test_worker_endpoint_address_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_WORKER_METRICS_PORT", raising=False)
    assert metrics.worker_metrics_address() == ("127.0.0.1", metrics.DEFAULT_WORKER_METRICS_PORT)
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_PORT", "off")
    assert metrics.worker_metrics_address()[1] is None
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_PORT", "0")
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_HOST", "0.0.0.0")
    assert metrics.worker_metrics_address() == ("0.0.0.0", 0)
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_PORT", "nine")
    with pytest.raises(ValueError, match="not a port"):
        metrics.worker_metrics_address()


def test_scrape_without_redis_says_so_and_still_answers() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetStateCollector(None, 0.002))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["fedgate_fleet_state_up"].samples[0].value == 0
    assert "fedgate_queue_depth" not in families
