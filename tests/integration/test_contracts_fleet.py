"""Issue 5: a succeeded job's output conforms to its contract; off-contract answers are repaired, then fail over."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.helpers import Proc, wait_for

TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "score": {"type": "number"},
    },
    "required": ["sentiment", "score"],
}


@pytest.fixture()
def contract(api: httpx.Client) -> str:
    name = "sentiment-" + os.urandom(3).hex()
    response = api.post("/v1/admin/contracts", json={"name": name, "schema": SCHEMA})
    assert response.status_code == 201, response.text
    return name


def run(api: httpx.Client, partner: str, contract: str, prompt: str = "Classify: great service") -> dict:
    response = api.post("/v1/jobs", json={"partner": partner, "prompt": prompt, "contract": contract})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    return wait_for(
        lambda: (j := api.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json())["status"] in TERMINAL and j,
        timeout=60, what=f"job {job_id}",
    )


@pytest.mark.parametrize("partner", ["sim-openai", "sim-anthropic"])
def test_each_partner_is_asked_for_structured_output(api: httpx.Client, sim: httpx.Client, worker: Proc,
                                                     contract: str, partner: str) -> None:
    job = run(api, partner, contract)
    assert job["status"] == "succeeded"
    assert job["contract"] == f"{contract}@1"
    assert job["parsed"] == {"sentiment": "positive", "score": 1.0}
    body = sim.get(f"/_sim/requests/{partner}").json()["bodies"][-1]
    assert ("json_schema" in body) if partner == "sim-openai" else ('"tool_choice"' in body)


def test_off_contract_answers_are_repaired_then_fail_over(api: httpx.Client, sim: httpx.Client, worker: Proc,
                                                          contract: str) -> None:
    sim.put("/_sim/partners/sim-openai", json={"offcontract_rate": 1})
    try:
        job = run(api, "sim-openai", contract)
    finally:
        sim.put("/_sim/partners/sim-openai", json={"offcontract_rate": 0})
    assert job["status"] == "succeeded"
    assert job["answered_by"] == "sim-anthropic"
    assert [(a["partner"], a["outcome"]) for a in job["history"]] == [
        ("sim-openai", "contract_violation"), ("sim-openai", "contract_violation"), ("sim-anthropic", "ok")]
    assert job["history"][0]["error"].startswith(f"{contract}@1: ")
    # The repair call carried the validation errors back to the partner.
    repair = sim.get("/_sim/requests/sim-openai").json()["bodies"][-1]
    assert "does not match the required JSON Schema" in repair


def test_a_persistent_violation_is_dead_lettered_with_the_errors(api: httpx.Client, sim: httpx.Client,
                                                                 worker: Proc, contract: str) -> None:
    sim.put("/_sim/partners/sim-openai", json={"offcontract_rate": 1})
    sim.put("/_sim/partners/sim-anthropic", json={"offcontract_rate": 1})
    try:
        job = run(api, "sim-openai", contract)
    finally:
        sim.put("/_sim/partners/sim-openai", json={"offcontract_rate": 0})
        sim.put("/_sim/partners/sim-anthropic", json={"offcontract_rate": 0})
    assert job["status"] == "dead_lettered"
    assert {a["outcome"] for a in job["history"]} == {"contract_violation"}
    assert all("cannot produce JSON" not in (a["error"] or "") for a in job["history"])  # no output text
    assert job["parsed"] is None


def test_an_unknown_contract_is_refused_at_submit(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "x", "contract": "no-such-contract"})
    assert response.status_code == 404
    assert "fedgate contracts add" in response.json()["error"]["message"]
