"""Issue 4: budgets, retries, the circuit breaker and fallback, poison jobs, a Redis restart."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from gateway_core.fleet.embedded_redis import EmbeddedRedis
from tests.helpers import FleetEnv, Proc, RedisDatabases, free_port, http_ok, start_fleet, wait_for
from workers.celery_app import make_celery
from workers.enqueue import send_attempt

TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_databases: RedisDatabases) -> Iterator[FleetEnv]:
    """A simulator and an API of this module's own, on a Redis database of its own: partners fail here and
    sim-openai's breaker opens, which no other module sees."""
    own = start_fleet(tmp_path_factory.mktemp("resilience-fleet"), redis_databases.url())
    yield own
    own.stop_all()


@pytest.fixture(scope="module")
def worker(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker("sim-openai,sim-anthropic,sim-limited")
    yield proc
    proc.stop()


def finish(api: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    def finished() -> dict | None:
        response = api.get(f"/v1/jobs/{job_id}", params={"wait": 10})
        if response.status_code == 503:  # the store is restarting: a client retries
            return None
        job = response.json()
        return job if job["status"] in TERMINAL else None

    return wait_for(finished, timeout=timeout, what=f"job {job_id} to finish")


def submit(api: httpx.Client, partner: str, prompt: str) -> str:
    response = api.post("/v1/jobs", json={"partner": partner, "prompt": prompt})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_gateway_budget_keeps_the_partner_under_its_limit(api: httpx.Client, sim: httpx.Client,
                                                           worker: Proc) -> None:
    """Gateway and partner both allow 120 req/min; a burst of 12 jobs is paced, and the partner never says 429."""
    sim.put("/_sim/partners/sim-openai", json={"requests_per_minute": 120, "burst_s": 1})
    try:
        ids = [submit(api, "sim-limited", f"paced {i}") for i in range(12)]
        jobs = [finish(api, job_id) for job_id in ids]
    finally:
        sim.put("/_sim/partners/sim-openai", json={"requests_per_minute": None})
    assert {j["status"] for j in jobs} == {"succeeded"}
    stats = sim.get("/_sim/stats").json()["partners"]["sim-openai"]
    assert stats["rate_limited"] == 0
    calls = sorted(a["started_at"] for j in jobs for a in j["history"] if a["outcome"] == "ok")
    # 2 req/s with one second of burst: 12 calls cannot all fit in less than (12 - 2) / 2 s.
    assert calls[-1] - calls[0] >= 4.5
    assert any(j["status"] == "succeeded" and j["attempts"] == 1 for j in jobs)


def test_partner_429_is_retried_after_its_retry_after(api: httpx.Client, sim: httpx.Client, worker: Proc) -> None:
    """No gateway limit configured: the partner's own limit answers 429 with Retry-After, and jobs wait it out."""
    sim.put("/_sim/partners/sim-anthropic", json={"requests_per_minute": 60, "burst_s": 1})
    try:
        ids = [submit(api, "sim-anthropic", f"limited {i}") for i in range(3)]
        jobs = [finish(api, job_id) for job_id in ids]
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"requests_per_minute": None})
    assert {j["status"] for j in jobs} == {"succeeded"}
    assert sim.get("/_sim/stats").json()["partners"]["sim-anthropic"]["rate_limited"] >= 1
    retried = [j for j in jobs if any(a["status_code"] == 429 for a in j["history"])]
    assert retried
    for job in retried:
        limited = next(a for a in job["history"] if a["status_code"] == 429)
        ok = next(a for a in job["history"] if a["outcome"] == "ok")
        assert ok["started_at"] - limited["started_at"] >= 0.9  # Retry-After: 1


def test_breaker_opens_and_jobs_go_straight_to_the_fallback(api: httpx.Client, sim: httpx.Client, worker: Proc,
                                                             fleet_redis: redis.Redis) -> None:
    sim.put("/_sim/partners/sim-openai", json={"error_rate": 1, "error_status": 503})
    first = [finish(api, submit(api, "sim-openai", f"outage {i}")) for i in range(3)]
    assert fleet_redis.hget("fg:breaker:sim-openai", "state") == "open"
    calls_when_open = sim.get("/_sim/stats").json()["partners"]["sim-openai"]["requests"]
    later = [finish(api, submit(api, "sim-openai", f"outage later {i}")) for i in range(5)]
    calls_after = sim.get("/_sim/stats").json()["partners"]["sim-openai"]["requests"]
    assert {j["status"] for j in first + later} == {"succeeded"}
    assert {j["answered_by"] for j in first + later} == {"sim-anthropic"}
    assert [a["outcome"] for a in first[0]["history"]] == ["retryable", "retryable", "ok"]
    assert first[0]["history"][0]["status_code"] == 503
    assert calls_after == calls_when_open  # an open breaker sends nothing to the failing partner
    for job in later:
        assert [a["outcome"] for a in job["history"]] == ["breaker_open", "ok"]


def test_a_poison_job_is_dead_lettered_without_blocking_the_queue(api: httpx.Client, fleet: FleetEnv,
                                                                  worker: Proc,
                                                                  fleet_redis: redis.Redis) -> None:
    client = fleet_redis
    poison_id = "job_poison" + os.urandom(4).hex()
    client.hset(f"fg:job:{poison_id}", mapping={
        "tenant": "dev", "partner": "sim-openai", "requested_partner": "sim-openai", "status": "queued",
        "attempt": "1", "created_at": "1.0", "history": "[]", "params": "{}", "metadata": "{}",
        "messages": Fernet(Fernet.generate_key()).encrypt(b"[]").decode(),  # not our key: unreadable
    })
    from gateway_core.settings import Settings

    send_attempt(make_celery(Settings(redis_url=fleet.env["FEDGATE_REDIS_URL"])), poison_id, "sim-openai", 1)
    healthy = finish(api, submit(api, "sim-openai", "behind the poison"))
    assert healthy["status"] == "succeeded"
    poisoned = finish(api, poison_id)
    assert poisoned["status"] == "dead_lettered"
    assert "unreadable job" in poisoned["error"]
    assert client.zscore("fg:dlq", poison_id) is not None


def test_redis_restart_mid_run_loses_no_accepted_job(tmp_path, fleet: FleetEnv) -> None:
    """A private Redis (AOF on) is restarted while jobs are queued and in flight; every accepted job finishes."""
    server = EmbeddedRedis(tmp_path / "redis", free_port()).start()
    env = dict(fleet.env, FEDGATE_REDIS_URL=server.url, FEDGATE_API_PORT=str(free_port()))
    env["FEDGATE_API_URL"] = f"http://127.0.0.1:{env['FEDGATE_API_PORT']}"
    private = FleetEnv(tmp_path, env)
    sim = httpx.Client(base_url=fleet.env["FEDGATE_SIMULATOR_URL"])
    try:
        private.spawn("api", "api")
        wait_for(lambda: http_ok(f"{env['FEDGATE_API_URL']}/healthz"), 30, what="private api")
        api = httpx.Client(base_url=env["FEDGATE_API_URL"], headers={"authorization": "Bearer test-key-dev"},
                           timeout=30)
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 300})
        private.start_worker("sim-anthropic", concurrency=20)
        ids = [submit(api, "sim-anthropic", f"through a restart {i}") for i in range(60)]
        server.stop()
        server.start()
        jobs = [finish(api, job_id, timeout=120) for job_id in ids]
        # after reconnecting, the worker takes as many jobs at once as before, not one at a time
        sim.post("/_sim/reset").raise_for_status()
        after = [submit(api, "sim-anthropic", f"after the restart {i}") for i in range(20)]
        assert [finish(api, job_id)["status"] for job_id in after] == ["succeeded"] * 20
        calls_at_once = sim.get("/_sim/stats").json()["partners"]["sim-anthropic"]["max_in_flight"]
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"latency_ms": 0})
        private.stop_all()
        server.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 60
    outputs = {j["output"] for j in jobs}
    assert outputs == {f"Simulated reply from sim-anthropic: through a restart {i}" for i in range(60)}
    assert json.dumps(jobs).count('"redelivered"') <= 20  # at most the calls in flight at the restart
    assert calls_at_once >= 10, f"only {calls_at_once} partner calls at once after the restart (concurrency 20)"
