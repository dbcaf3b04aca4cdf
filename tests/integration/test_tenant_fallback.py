"""Through the fleet: a tenant limited to some partners (TenantConfig.partners) is never taken to another one by the
fallback chain, whatever its job provokes; the job dead-letters saying so.

Tenant `restricted` (tests/fleet_config.yaml, this module's own) may use sim-openai only; sim-openai falls back to
sim-anthropic.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import FleetEnv, Proc, finish_job, submit_job


@pytest.fixture()
def restricted(fleet: FleetEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.env["FEDGATE_API_URL"], headers={"authorization": "Bearer test-key-restricted"},
                      timeout=60) as client:
        yield client


def test_a_fatal_error_does_not_take_a_tenant_to_a_partner_it_may_not_use(
    worker: Proc, sim: httpx.Client, api: httpx.Client, restricted: httpx.Client
) -> None:
    sim.put("/_sim/partners/sim-openai", json={"error_rate": 1, "error_status": 400}).raise_for_status()
    try:
        limited = finish_job(restricted, submit_job(restricted, "sim-openai", "provoke a fatal error"))
        unlimited = finish_job(api, submit_job(api, "sim-openai", "the same for a tenant of every partner"))
    finally:
        sim.put("/_sim/partners/sim-openai", json={"error_rate": 0}).raise_for_status()

    assert limited["status"] == "dead_lettered", limited
    assert [(a["partner"], a["outcome"]) for a in limited["history"]] == [("sim-openai", "fatal")]
    assert "tenant 'restricted' may use" in limited["error"] and "sim-anthropic" in limited["error"]
    # the control: the dev tenant (no partners list) falls back as configured
    assert (unlimited["status"], unlimited["answered_by"]) == ("succeeded", "sim-anthropic"), unlimited
    received = sim.get("/_sim/requests/sim-anthropic").json()["bodies"]
    assert [b for b in received if "provoke a fatal error" in b] == []  # never sent where the tenant may not go
    assert len([b for b in received if "the same for a tenant of every partner" in b]) == 1  # the dev tenant's
