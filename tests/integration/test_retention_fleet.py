"""Through the fleet: a partner that keeps nothing (`policy: {retention_s: 0}`, sim-anthropic-forgetful in
tests/fleet_config.yaml) has the prompt deleted whatever the ending: dead-lettered by the worker, cancelled through
the API; and a dead letter whose prompt is gone is not replayed (there is nothing to send)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.helpers import FleetEnv, Proc, finish_job, submit_job, wait_for

PARTNER = "sim-anthropic-forgetful"  # answered by the simulator's sim-anthropic
PAYLOAD = {"messages", "output", "parsed", "placeholder_map"}


@pytest.fixture(scope="module")
def forgetful(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker(PARTNER)
    yield proc
    proc.stop()


def test_a_dead_letter_keeps_no_prompt_and_cannot_be_replayed(
    forgetful: Proc, sim: httpx.Client, api: httpx.Client, fleet_redis: redis.Redis
) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 1, "error_status": 400}).raise_for_status()
    try:
        job = finish_job(api, submit_job(api, PARTNER, "my card is 4111 1111 1111 1111"))
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 0}).raise_for_status()
    assert job["status"] == "dead_lettered", job
    assert job["payload_retained"] is False
    stored = fleet_redis.hgetall(f"fg:job:{job['id']}")
    assert stored["status"] == "dead_lettered" and not PAYLOAD & set(stored)
    assert fleet_redis.ttl(f"fg:job:{job['id']}") > 0
    replay = api.post(f"/v1/admin/dead-letters/{job['id']}/replay")
    assert replay.status_code == 409, replay.text
    assert "retention" in replay.text and "payload_removed" in replay.text
    assert fleet_redis.hget(f"fg:job:{job['id']}", "status") == "dead_lettered"


def test_a_cancelled_job_keeps_no_prompt(
    forgetful: Proc, sim: httpx.Client, api: httpx.Client, fleet_redis: redis.Redis
) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 3000}).raise_for_status()
    try:
        job_id = submit_job(api, PARTNER, "call me on 415 555 0100")
        wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] == "running", 30, what="the call to start")
        cancelled = api.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled" and cancelled.json()["payload_retained"] is False
        stored = fleet_redis.hgetall(f"fg:job:{job_id}")
        assert stored["status"] == "cancelled" and not PAYLOAD & set(stored)
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0}).raise_for_status()
    # the call in flight comes back and is dropped: the job stays cancelled, without its prompt
    assert finish_job(api, job_id)["status"] == "cancelled"
    assert not PAYLOAD & set(fleet_redis.hgetall(f"fg:job:{job_id}"))
