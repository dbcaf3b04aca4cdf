"""Operators see the fleet: /metrics (Prometheus, fleet state read from Redis), /v1/admin/status and
`fedgate status`, against the running API, simulator and a real worker."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from gateway_api import cli_status
from gateway_core.fleet.fleet_state import FleetState
from tests.helpers import FleetEnv, Proc, wait_for

TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}
PARTNERS = ("sim-openai", "sim-anthropic", "sim-anthropic-forgetful", "sim-limited",  # tests/fleet_config.yaml
            "sim-azure", "sim-gemini")
SECRETS = ("test-key-dev", "test-key-other", "sk-sim-test", "sk-ant-test")
WORKER_SLOTS = 2


@pytest.fixture(scope="module")
def worker(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker("sim-openai", concurrency=WORKER_SLOTS)
    yield proc
    proc.stop()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(fleet: FleetEnv) -> tuple[str, Samples]:
    token = (Path(fleet.env["FEDGATE_HOME"]) / "metrics-token").read_text().strip()  # the API made it at start
    response = httpx.get(fleet.env["FEDGATE_API_URL"] + "/metrics", headers={"authorization": f"Bearer {token}"},
                         timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    return response.text, samples


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(cli_status.status)
    return app


def cli_env(fleet: FleetEnv, key: str = "test-key-dev") -> dict[str, str]:
    return {"FEDGATE_API_URL": fleet.env["FEDGATE_API_URL"], "FEDGATE_API_KEY": key}


def test_metrics_export_the_fleet_state_for_every_partner(fleet: FleetEnv) -> None:
    _, samples = scrape(fleet)
    assert value(samples, "fedgate_fleet_state_up") == 1
    for partner in PARTNERS:
        for lane in ("interactive", "batch"):
            assert value(samples, "fedgate_queue_depth", partner=partner, lane=lane) is not None
        for metric in ("fedgate_delayed_jobs", "fedgate_in_flight_jobs", "fedgate_dead_letters",
                       "fedgate_breaker_window_calls"):
            assert value(samples, metric, partner=partner) is not None, (metric, partner)
        states = {s: value(samples, "fedgate_breaker_state", partner=partner, state=s)
                  for s in ("closed", "open", "half_open")}
        assert sorted(states.values()) == [0, 0, 1]
    assert value(samples, "fedgate_bucket_capacity", partner="sim-limited", bucket="requests") == 1.0  # 120/min
    assert value(samples, "fedgate_bucket_capacity", partner="sim-openai", bucket="requests") is None  # no limit
    assert (value(samples, "fedgate_dead_letter_queue_size") or 0) >= 0
    assert any(n.startswith(("python_", "process_")) for n, _ in samples)  # the API process's own metrics


def test_a_slow_partner_shows_queue_depth_and_calls_in_flight_without_content(
    fleet: FleetEnv, api: httpx.Client, sim: httpx.Client, worker: Proc
) -> None:
    marker = f"metrics-{secrets.token_hex(6)}"
    prompt = f"{marker}: patient Jane Roe, jane.roe@example.com, card 4111 1111 1111 1111"
    _, before = scrape(fleet)  # the fleet is shared: this test's jobs add to whatever was there
    busy_before = value(before, "fedgate_in_flight_jobs", partner="sim-openai") or 0
    waiting_before = value(before, "fedgate_queue_depth", partner="sim-openai", lane="interactive") or 0
    assert sim.put("/_sim/partners/sim-openai", json={"latency_ms": 1500}).status_code == 200
    try:
        ids = []
        for _ in range(WORKER_SLOTS + 2):
            accepted = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": prompt})
            assert accepted.status_code == 202, accepted.text
            ids.append(accepted.json()["id"])

        def backlog() -> tuple[str, Samples] | None:
            text, samples = scrape(fleet)
            busy = value(samples, "fedgate_in_flight_jobs", partner="sim-openai") or 0
            waiting = value(samples, "fedgate_queue_depth", partner="sim-openai", lane="interactive") or 0
            return (text, samples) if busy >= busy_before + 1 and waiting >= waiting_before + 1 else None

        text, _ = wait_for(backlog, 30, what="jobs in flight and waiting on sim-openai's queue")
        status = api.get("/v1/admin/status")
        assert status.status_code == 200, status.text
    finally:
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})
    for job_id in ids:
        job = wait_for(
            lambda job_id=job_id: (j := api.get(f"/v1/jobs/{job_id}", params={"wait": 20}).json())["status"]
            in TERMINAL and j, 60, what=f"job {job_id} to finish")
        assert job["status"] == "succeeded", job
    for leak in (marker, "Jane Roe", "jane.roe@example.com", "4111 1111", *SECRETS):
        assert leak not in text and leak not in status.text, leak

    def drained() -> bool:  # a job's message is acknowledged just after its result is published
        _, after = scrape(fleet)
        return ((value(after, "fedgate_in_flight_jobs", partner="sim-openai") or 0) <= busy_before
                and (value(after, "fedgate_queue_depth", partner="sim-openai", lane="interactive") or 0)
                <= waiting_before)

    wait_for(drained, 10, what="none of this test's jobs in flight or waiting once all have finished")


def test_admin_status_is_for_operators_only(fleet: FleetEnv, api: httpx.Client) -> None:
    response = api.get("/v1/admin/status")
    assert response.status_code == 200, response.text
    state = FleetState.model_validate(response.json())
    assert [p.name for p in state.partners] == list(PARTNERS)
    assert state.partner("sim-limited").buckets["requests"].capacity == 1.0
    assert "error_rate" in response.json()["partners"][0]["breaker"]

    other = httpx.get(fleet.env["FEDGATE_API_URL"] + "/v1/admin/status",
                      headers={"authorization": "Bearer test-key-other"}, timeout=10)
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "admin_required"
    anonymous = httpx.get(fleet.env["FEDGATE_API_URL"] + "/v1/admin/status", timeout=10)
    assert anonymous.status_code == 401


def test_fedgate_status_prints_one_table(fleet: FleetEnv) -> None:
    result = CliRunner().invoke(cli_app(), [], env=cli_env(fleet))
    assert result.exit_code == 0, result.output
    for header in ("Partner", "Queue", "In flight", "Requests bucket", "Breaker", "Error rate", "Dead letters"):
        assert header in result.output
    for partner in PARTNERS:
        assert partner in result.output

    as_json = CliRunner().invoke(cli_app(), ["--json"], env=cli_env(fleet))
    assert as_json.exit_code == 0, as_json.output
    assert [p["name"] for p in json.loads(as_json.output)["partners"]] == list(PARTNERS)

    refused = CliRunner().invoke(cli_app(), [], env=cli_env(fleet, "test-key-other"))
    assert refused.exit_code == 1
    assert "not an operator" in refused.output


def test_fedgate_status_watch_refreshes_until_interrupted(fleet: FleetEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fetch = cli_status.fetch_state
    calls: list[int] = []

    def fetch_twice(timeout_s: float = 10.0) -> FleetState:
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt  # what Ctrl-C does
        return real_fetch(timeout_s)

    monkeypatch.setattr(cli_status, "fetch_state", fetch_twice)
    result = CliRunner().invoke(cli_app(), ["--watch", "--interval", "0.2"], env=cli_env(fleet))
    assert result.exit_code == 0, result.output
    assert len(calls) == 3
    assert "sim-limited" in result.output
