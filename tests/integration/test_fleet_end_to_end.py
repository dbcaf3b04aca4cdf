"""Issue 2: jobs flow from the API through per-partner Celery queues to a partner and back."""

from __future__ import annotations

import concurrent.futures
import signal
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.helpers import FleetEnv, Proc, calls_with, wait_for

TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}


@pytest.fixture(scope="module")
def workers(fleet: FleetEnv) -> Iterator[list[Proc]]:
    procs = [fleet.start_worker("sim-openai"), fleet.start_worker("sim-anthropic")]
    yield procs
    for proc in procs:
        proc.stop()


def finished(api: httpx.Client, job_id: str, wait: float = 20) -> dict:
    return wait_for(
        lambda: (j := api.get(f"/v1/jobs/{job_id}", params={"wait": wait}).json())["status"] in TERMINAL and j,
        timeout=wait * 3, what=f"job {job_id} to finish",
    )


@pytest.mark.parametrize("partner", ["sim-openai", "sim-anthropic"])
def test_a_job_goes_through_each_adapter(api: httpx.Client, sim: httpx.Client, workers: list[Proc],
                                         partner: str) -> None:
    accepted = api.post("/v1/jobs", json={"partner": partner, "prompt": "What is a token bucket?"})
    assert accepted.status_code == 202, accepted.text
    job = finished(api, accepted.json()["id"])
    assert job["status"] == "succeeded"
    assert job["answered_by"] == partner
    assert job["output"] == f"Simulated reply from {partner}: What is a token bucket?"
    assert job["usage"]["prompt_tokens"] > 0 and job["usage"]["completion_tokens"] > 0
    assert job["attempts"] == 1
    assert job["timings_ms"]["total_ms"] > 0
    assert calls_with(sim, partner, "What is a token bucket?") == 1


def test_two_hundred_jobs_at_once_all_succeed(api: httpx.Client, sim: httpx.Client, workers: list[Proc]) -> None:
    def submit(i: int) -> str:
        partner = "sim-openai" if i % 2 else "sim-anthropic"
        response = api.post("/v1/jobs", json={"partner": partner, "prompt": f"job number {i}"})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(submit, range(200)))
    jobs = [finished(api, job_id, wait=30) for job_id in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * 200
    assert {j["output"].split(": ", 1)[1] for j in jobs} == {f"job number {i}" for i in range(200)}
    assert calls_with(sim, "sim-openai", "job number ") + calls_with(sim, "sim-anthropic", "job number ") == 200


def test_long_poll_returns_when_the_job_finishes(api: httpx.Client, sim: httpx.Client,
                                                 workers: list[Proc]) -> None:
    sim.put("/_sim/partners/sim-openai", json={"latency_ms": 300})
    try:
        job_id = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "slow one"}).json()["id"]
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] in {"queued", "running"}
        job = api.get(f"/v1/jobs/{job_id}", params={"wait": 20}).json()
        assert job["status"] == "succeeded"
    finally:
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})


def test_another_tenant_cannot_see_a_job(api: httpx.Client, fleet: FleetEnv, workers: list[Proc]) -> None:
    job_id = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "mine"}).json()["id"]
    other = httpx.get(f"{fleet.env['FEDGATE_API_URL']}/v1/jobs/{job_id}",
                      headers={"authorization": "Bearer test-key-other"})
    assert other.status_code == 404
    assert "no job" in other.json()["error"]["message"]
    unauthenticated = httpx.get(f"{fleet.env['FEDGATE_API_URL']}/v1/jobs/{job_id}")
    assert unauthenticated.status_code == 401


def test_a_worker_killed_mid_call_loses_no_job(api: httpx.Client, sim: httpx.Client, fleet: FleetEnv,
                                               workers: list[Proc], fleet_redis: redis.Redis) -> None:
    """SIGKILL during the partner call: the message is redelivered and the job finishes exactly once."""
    victim = fleet.start_worker("sim-openai")  # a second consumer of the same queue, then the only one
    workers[0].stop()
    sim.put("/_sim/partners/sim-openai", json={"latency_ms": 2500})
    try:
        job_id = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "survive a crash"}).json()["id"]
        wait_for(lambda: sim.get("/_sim/stats").json()["partners"]["sim-openai"]["in_flight"] >= 1, 20,
                 what="the partner call to be in flight")
        victim.stop(signal.SIGKILL)
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        workers[0] = fleet.start_worker("sim-openai")
        job = finished(api, job_id, wait=30)
    finally:
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})
    assert job["status"] == "succeeded"
    assert job["output"] == "Simulated reply from sim-openai: survive a crash"
    outcomes = [a["outcome"] for a in job["history"]]
    assert outcomes == ["redelivered", "ok"], outcomes
    assert not [raw for raw in fleet_redis.lrange("partner.sim-openai", 0, -1) if job_id in raw]  # not to run again
    assert fleet_redis.hget(f"fg:job:{job_id}", "status") == "succeeded"
