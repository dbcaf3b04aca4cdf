"""Issue 12: jobs through the Azure OpenAI and Gemini adapters, end to end through the fleet (API, Redis, a Celery
worker, the simulator speaking each partner's wire format and compressing its answers)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import FleetEnv, Proc, finish_job, submit_job

NEW_PARTNERS = ["sim-azure", "sim-gemini"]
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}, "score": {"type": "number"}},
    "required": ["sentiment", "score"],
}


@pytest.fixture(scope="module")
def new_partners_worker(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker(",".join(NEW_PARTNERS))
    yield proc
    proc.stop()


@pytest.fixture()
def restore_behaviour(sim: httpx.Client) -> Iterator[None]:
    yield
    for name in NEW_PARTNERS:
        sim.put(f"/_sim/partners/{name}", json={"error_rate": 0, "html_502_rate": 0, "chunked_rate": 0,
                                                "close_connection_rate": 0})


def partner_stats(sim: httpx.Client, partner: str) -> dict[str, Any]:
    stats: dict[str, Any] = sim.get("/_sim/stats").json()["partners"][partner]
    return stats


@pytest.mark.parametrize("partner", NEW_PARTNERS)
def test_a_job_goes_through_each_new_adapter(api: httpx.Client, sim: httpx.Client, new_partners_worker: Proc,
                                             partner: str) -> None:
    job = finish_job(api, submit_job(api, partner, "What is a deployment?"))
    assert job["status"] == "succeeded", job
    assert job["answered_by"] == partner
    assert job["output"] == f"Simulated reply from {partner}: What is a deployment?"
    assert job["usage"]["prompt_tokens"] > 0 and job["usage"]["completion_tokens"] > 0
    assert job["attempts"] == 1
    stats = partner_stats(sim, partner)
    assert stats["ok"] == 1
    assert sum(stats["encodings"].values()) == 1  # the answer came compressed, and the worker read it


@pytest.mark.parametrize("partner", NEW_PARTNERS)
def test_structured_output_through_each_new_adapter(api: httpx.Client, sim: httpx.Client, new_partners_worker: Proc,
                                                    partner: str) -> None:
    contract = "mood-" + os.urandom(3).hex()
    assert api.post("/v1/admin/contracts", json={"name": contract, "schema": SCHEMA}).status_code == 201
    accepted = api.post("/v1/jobs", json={"partner": partner, "prompt": "Great service!", "contract": contract})
    assert accepted.status_code == 202, accepted.text
    job = finish_job(api, accepted.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["parsed"] == {"sentiment": "positive", "score": 1.0}
    sent = json.loads(sim.get(f"/_sim/requests/{partner}").json()["bodies"][-1])
    if partner == "sim-azure":
        assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    else:
        assert sent["generationConfig"]["responseJsonSchema"] == SCHEMA


def test_a_failing_azure_deployment_falls_back_to_gemini(api: httpx.Client, sim: httpx.Client,
                                                         new_partners_worker: Proc, restore_behaviour: None) -> None:
    sim.put("/_sim/partners/sim-azure", json={"html_502_rate": 1})
    job = finish_job(api, submit_job(api, "sim-azure", "anyone there?"))
    assert job["status"] == "succeeded", job
    assert job["answered_by"] == "sim-gemini"
    assert job["output"] == "Simulated reply from sim-gemini: anyone there?"
    assert partner_stats(sim, "sim-azure")["errors"]["html_502"] == 2  # retry.max_attempts before the fallback


def test_chunked_answers_on_closed_connections(api: httpx.Client, sim: httpx.Client, new_partners_worker: Proc,
                                               restore_behaviour: None) -> None:
    for partner in NEW_PARTNERS:
        sim.put(f"/_sim/partners/{partner}", json={"chunked_rate": 1, "close_connection_rate": 1})
    ids = [submit_job(api, partner, f"piece {i}") for i in range(4) for partner in NEW_PARTNERS]
    jobs = [finish_job(api, job_id) for job_id in ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * len(ids)
    assert all(job["attempts"] == 1 for job in jobs)
    for partner in NEW_PARTNERS:
        assert (partner_stats(sim, partner)["chunked"], partner_stats(sim, partner)["closed"]) == (4, 4)
