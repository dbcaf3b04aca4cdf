"""A worker's --concurrency bounds the partner calls it has in flight, and it keeps that many going."""

from __future__ import annotations

import signal

import httpx

from tests.helpers import FleetEnv, calls_with, finish_job, submit_job, wait_for

# The partner's call counts are this module's own: its jobs' prompts carry a marker, and the calls are counted by
# the bodies the simulator recorded with it (the shared fleet may serve others' leftover jobs meanwhile).


def test_partner_calls_in_flight_stay_at_the_worker_concurrency(api: httpx.Client, sim: httpx.Client,
                                                                fleet: FleetEnv) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 300}).raise_for_status()
    worker = fleet.start_worker("sim-anthropic", concurrency=4)
    try:
        ids = [submit_job(api, "sim-anthropic", f"slot {i}") for i in range(24)]
        jobs = [finish_job(api, job_id) for job_id in ids]
        seen = sim.get("/_sim/stats").json()["partners"]["sim-anthropic"]
        calls = calls_with(sim, "sim-anthropic", "slot ")
    finally:
        worker.stop()
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0})
    assert [job["status"] for job in jobs] == ["succeeded"] * 24
    # the worker holds a few more jobs than it has slots, but the partner never sees more than 4 calls at once
    assert seen["max_in_flight"] == 4
    assert calls == 24


def test_a_warm_shutdown_finishes_calls_in_flight_and_gives_back_the_rest_without_calling(
        api: httpx.Client, sim: httpx.Client, fleet: FleetEnv) -> None:
    """SIGTERM: the calls in flight finish and publish; jobs held but not yet calling go back to the queue at once
    (no partner call, no 'redelivered' note), and the next worker runs each of them once."""
    sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 3000}).raise_for_status()
    try:
        first = fleet.start_worker("sim-anthropic", concurrency=8)  # holds 10 messages: 8 calling, 2 waiting
        ids = [submit_job(api, "sim-anthropic", f"shutdown {i}") for i in range(30)]
        wait_for(lambda: sim.get("/_sim/stats").json()["partners"]["sim-anthropic"]["in_flight"] == 8, 30,
                 what="eight calls in flight")
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=60) == 0
        calls_by_first = calls_with(sim, "sim-anthropic", "shutdown ")
        finished_by_first = [job_id for job_id in ids if api.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"]
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0}).raise_for_status()
        second = fleet.start_worker("sim-anthropic", concurrency=8)
        jobs = [finish_job(api, job_id) for job_id in ids]
        second.stop()
        total_calls = calls_with(sim, "sim-anthropic", "shutdown ")
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0})
    assert calls_by_first == 8 and len(finished_by_first) == 8
    assert [job["status"] for job in jobs] == ["succeeded"] * 30
    assert total_calls == 30  # every job called its partner exactly once
    assert not [job["id"] for job in jobs if any(a["outcome"] == "redelivered" for a in job["history"])]


def test_a_rolling_restart_under_load_loses_and_repeats_nothing(api: httpx.Client, sim: httpx.Client,
                                                                 fleet: FleetEnv) -> None:
    """Two workers; each in turn is stopped (SIGTERM) mid-flight and replaced, as a deploy does. Every job succeeds
    and the partner is called exactly once per job."""
    # Slow calls while the workers are replaced (120 jobs at 3 s over 20 slots: 18 s of work, more than two
    # replacements take even on a loaded machine), then fast ones for the rest.
    sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 3000}).raise_for_status()
    try:
        workers = [fleet.start_worker("sim-anthropic", concurrency=10) for _ in range(2)]
        ids = [submit_job(api, "sim-anthropic", f"rolling {i}") for i in range(120)]
        for _ in range(2):
            calls_before = _calls(sim)
            wait_for(lambda before=calls_before: _calls(sim) >= before + 10, 30, what="the fleet to be calling")
            retiring = workers.pop(0)
            retiring.process.send_signal(signal.SIGTERM)
            assert retiring.process.wait(timeout=60) == 0
            workers.append(fleet.start_worker("sim-anthropic", concurrency=10))
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0}).raise_for_status()
        jobs = [finish_job(api, job_id) for job_id in ids]
        total_calls = calls_with(sim, "sim-anthropic", "rolling ")
        for worker in workers:
            worker.stop()
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0})
    assert [job["status"] for job in jobs] == ["succeeded"] * 120
    assert total_calls == 120
    assert not [job["id"] for job in jobs if any(a["outcome"] == "redelivered" for a in job["history"])]


def _calls(sim: httpx.Client) -> int:
    return int(sim.get("/_sim/stats").json()["partners"]["sim-anthropic"]["requests"])
