"""A worker's --concurrency bounds the partner calls it has in flight, and it keeps that many going."""

from __future__ import annotations

import httpx

from tests.helpers import FleetEnv, finish_job, submit_job


def test_partner_calls_in_flight_stay_at_the_worker_concurrency(api: httpx.Client, sim: httpx.Client,
                                                                fleet: FleetEnv) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 300}).raise_for_status()
    worker = fleet.start_worker("sim-anthropic", concurrency=4)
    try:
        ids = [submit_job(api, "sim-anthropic", f"slot {i}") for i in range(24)]
        jobs = [finish_job(api, job_id) for job_id in ids]
        seen = sim.get("/_sim/stats").json()["partners"]["sim-anthropic"]
    finally:
        worker.stop()
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0})
    assert [job["status"] for job in jobs] == ["succeeded"] * 24
    # the worker holds a few more jobs than it has slots, but the partner never sees more than 4 calls at once
    assert seen["max_in_flight"] == 4
    assert seen["requests"] == 24
