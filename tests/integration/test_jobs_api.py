"""Native job API: Idempotency-Key and cancel."""

from __future__ import annotations

import os

import httpx

from tests.helpers import FleetEnv, Proc, wait_for


def test_same_idempotency_key_and_body_is_the_same_job(api: httpx.Client, worker: Proc) -> None:
    key = "order-" + os.urandom(4).hex()
    body = {"partner": "sim-openai", "prompt": "charge once"}
    first = api.post("/v1/jobs", json=body, headers={"idempotency-key": key})
    again = api.post("/v1/jobs", json=body, headers={"idempotency-key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    changed = api.post("/v1/jobs", json={**body, "prompt": "charge twice"}, headers={"idempotency-key": key})
    assert changed.status_code == 409
    assert "different request body" in changed.json()["error"]["message"]
    other = api.post("/v1/jobs", json=body, headers={"idempotency-key": key + "-b"})
    assert other.json()["id"] != first.json()["id"]


def test_a_queued_job_can_be_cancelled_and_is_never_run(api: httpx.Client, sim: httpx.Client, fleet: FleetEnv) -> None:
    # No worker consumes this partner's queue here, so the job stays queued until cancelled.
    job_id = api.post("/v1/jobs", json={"partner": "sim-limited", "prompt": "never mind"}).json()["id"]
    cancelled = api.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    worker = fleet.start_worker("sim-limited")
    try:
        probe = api.post("/v1/jobs", json={"partner": "sim-limited", "prompt": "after"}).json()["id"]
        wait_for(lambda: api.get(f"/v1/jobs/{probe}", params={"wait": 5}).json()["status"] == "succeeded", 60,
                 what="a later job on the same queue")
    finally:
        worker.stop()
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert api.post(f"/v1/jobs/{probe}/cancel").status_code == 409
    bodies = sim.get("/_sim/requests/sim-openai").json()["bodies"]
    assert not any("never mind" in b for b in bodies)
