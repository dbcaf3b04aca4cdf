"""Through the fleet: a tenant limited to some partners (TenantConfig.partners) is never taken to another one by the
fallback chain, whatever its job provokes; the job dead-letters saying so.

Tenant `budgeted` (tests/fleet_config.yaml) may use sim-openai only; sim-openai falls back to sim-anthropic. Its
usage keys are removed first (it has a tiny budget) and no call here is billed to it (failed calls report no usage).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.helpers import FleetEnv, Proc, finish_job, submit_job


@pytest.fixture()
def budgeted(fleet: FleetEnv) -> Iterator[httpx.Client]:
    store = redis.Redis.from_url(fleet.env["FEDGATE_REDIS_URL"], decode_responses=True)
    try:
        stale = list(store.scan_iter("fg:usage:budgeted:*"))
        if stale:
            store.delete(*stale)
    finally:
        store.close()
    with httpx.Client(base_url=fleet.env["FEDGATE_API_URL"], headers={"authorization": "Bearer test-key-budgeted"},
                      timeout=60) as client:
        yield client


def test_a_fatal_error_does_not_take_a_tenant_to_a_partner_it_may_not_use(
    worker: Proc, sim: httpx.Client, api: httpx.Client, budgeted: httpx.Client
) -> None:
    sim.put("/_sim/partners/sim-openai", json={"error_rate": 1, "error_status": 400}).raise_for_status()
    try:
        limited = finish_job(budgeted, submit_job(budgeted, "sim-openai", "provoke a fatal error"))
        unlimited = finish_job(api, submit_job(api, "sim-openai", "the same for a tenant of every partner"))
    finally:
        sim.put("/_sim/partners/sim-openai", json={"error_rate": 0}).raise_for_status()

    assert limited["status"] == "dead_lettered", limited
    assert [(a["partner"], a["outcome"]) for a in limited["history"]] == [("sim-openai", "fatal")]
    assert "tenant 'budgeted' may use" in limited["error"] and "sim-anthropic" in limited["error"]
    # the control: the dev tenant (no partners list) falls back as configured
    assert (unlimited["status"], unlimited["answered_by"]) == ("succeeded", "sim-anthropic"), unlimited
    calls = sim.get("/_sim/stats").json()["partners"]["sim-anthropic"]["requests"]
    assert calls == 1  # the dev tenant's fallback only
