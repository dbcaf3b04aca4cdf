"""Jobs through real workers against a partner that misbehaves on the wire: each failure retries or falls back
as the partner's config says, and ends in a final status whose history says what happened.

Its own API and worker run with their own config (the `wire` partners point at tests/wire_servers.py), on the
session's Redis and simulator; `sim-openai` is the fallback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from gateway_core.fleet import keys
from tests import wire_servers as wire
from tests.helpers import FleetEnv, finish_job, free_port, http_ok, submit_job, wait_for

CONFIG = """
partners:
  wire:
    adapter: openai
    base_url: {wire_url}/v1
    model: wire-model
    api_key: sk-wire
    timeout_s: 3
    retry: {{max_attempts: 2, base_delay_s: 0.05, max_delay_s: 1}}
    breaker: {{enabled: false}}
    fallback: [sim-openai]
  wire-internal:
    adapter: openai
    base_url: {wire_url}/v1
    model: wire-model
    timeout_s: 3
    retry: {{max_attempts: 2, base_delay_s: 0.05, max_delay_s: 1}}
  sim-openai:
    adapter: openai
    base_url: {sim_url}/sim-openai/v1
    model: sim-gpt
    api_key: sk-sim-test
    timeout_s: 4
tenants:
  dev:
    api_key: test-key-wire
    admin: true
"""
MAX_RESPONSE_BYTES = 65536
CONCURRENCY = 4


@pytest.fixture(scope="module")
def server() -> Iterator[wire.WireServer]:
    with wire.wire_server() as found:
        yield found


@pytest.fixture(scope="module")
def wire_fleet(fleet: FleetEnv, server: wire.WireServer) -> Iterator[FleetEnv]:
    config = fleet.home / "wire-config.yaml"
    config.write_text(CONFIG.format(wire_url=server.url, sim_url=fleet.env["FEDGATE_SIMULATOR_URL"]))
    api_port = free_port()
    env = {**fleet.env, "FEDGATE_CONFIG": str(config), "FEDGATE_API_PORT": str(api_port),
           "FEDGATE_API_URL": f"http://127.0.0.1:{api_port}", "FEDGATE_API_KEY": "test-key-wire",
           "FEDGATE_MAX_PARTNER_RESPONSE_BYTES": str(MAX_RESPONSE_BYTES)}
    own = FleetEnv(fleet.home, env)
    own.spawn("wire-api", "api")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{api_port}/healthz"), 30, what="api")
    own.start_worker("wire,sim-openai", concurrency=CONCURRENCY)
    yield own
    own.stop_all()


@pytest.fixture()
def client(wire_fleet: FleetEnv, server: wire.WireServer) -> Iterator[httpx.Client]:
    server.behaviour = wire.answer()
    with httpx.Client(base_url=wire_fleet.env["FEDGATE_API_URL"], timeout=60,
                      headers={"authorization": "Bearer test-key-wire"}) as http:
        yield http


def outcomes(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["partner"], a["outcome"]) for a in job["history"]]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_compressed_answers_reach_the_app(client: httpx.Client, server: wire.WireServer, encoding: str) -> None:
    server.behaviour = wire.answer(encoding, chunked=encoding == "gzip")
    ids = [submit_job(client, "wire", f"compressed {encoding} {i}") for i in range(3)]
    jobs = [finish_job(client, job_id) for job_id in ids]
    assert [(j["status"], j["output"], j["answered_by"]) for j in jobs] == [("succeeded", "wire says hi", "wire")] * 3
    assert [outcomes(j) for j in jobs] == [[("wire", "ok")]] * 3


@pytest.mark.parametrize(
    ("behaviour", "error_starts"),
    [(wire.HTML_502, "HTTP 502: partner returned an error (text/html body)"),
     (wire.reset_mid_body, "connection error: ReadError"),
     (wire.not_really_gzip, "undecodable response body")],
    ids=["html-502", "reset-mid-body", "bad-gzip"],
)
def test_a_retryable_wire_failure_retries_then_falls_back(client: httpx.Client, server: wire.WireServer,
                                                          behaviour: wire.Behaviour, error_starts: str) -> None:
    server.behaviour = behaviour
    job = finish_job(client, submit_job(client, "wire", f"retry then fall back {error_starts[:10]}"))
    assert (job["status"], job["answered_by"]) == ("succeeded", "sim-openai")
    assert outcomes(job) == [("wire", "retryable"), ("wire", "retryable"), ("sim-openai", "ok")]
    assert all(a["error"].startswith(error_starts) for a in job["history"][:2]), job["history"]


def test_an_answer_over_the_size_cap_falls_back_at_once(client: httpx.Client, server: wire.WireServer) -> None:
    server.behaviour = wire.oversized(MAX_RESPONSE_BYTES * 20, "gzip")
    job = finish_job(client, submit_job(client, "wire", "too big an answer"))
    assert (job["status"], job["answered_by"]) == ("succeeded", "sim-openai")
    assert outcomes(job) == [("wire", "fatal"), ("sim-openai", "ok")]
    assert job["history"][0]["error"] == f"the answer is over the {MAX_RESPONSE_BYTES:,}-byte cap"


def test_an_internal_error_is_retried_a_bounded_number_of_times_then_dead_lettered_with_its_reason(
    client: httpx.Client, server: wire.WireServer, wire_fleet: FleetEnv
) -> None:
    # A record the pipeline cannot handle (a parameter of the wrong type, as a bug or a bad migration would
    # leave it): written while no worker reads the partner's queue, then a worker starts.
    job_id = submit_job(client, "wire-internal", "internal error")
    store = redis.Redis.from_url(wire_fleet.env["FEDGATE_REDIS_URL"], decode_responses=True)
    try:
        assert store.hset(keys.job(job_id), "params", '{"max_tokens": "lots"}') == 0  # replaced, not added
    finally:
        store.close()
    worker = wire_fleet.start_worker("wire-internal", concurrency=2)
    try:
        job = finish_job(client, job_id)
    finally:
        worker.stop()
    assert job["status"] == "dead_lettered"
    assert outcomes(job) == [("wire-internal", "retryable")] * 2
    assert {a["error"] for a in job["history"]} == {"internal error in the worker (TypeError)"}
    assert "internal error in the worker (TypeError)" in job["error"], job["error"]
    assert "internal error" not in " ".join(server.prompts())  # it never reached the partner


def test_a_run_that_lost_its_claim_while_waiting_for_a_slot_never_calls(
    client: httpx.Client, server: wire.WireServer, wire_fleet: FleetEnv
) -> None:
    server.behaviour = wire.slow(1.5)
    holders = [submit_job(client, "wire", f"holds a slot {i}") for i in range(CONCURRENCY)]
    wait_for(lambda: sum(p.startswith("holds a slot") for p in server.prompts()) == CONCURRENCY, 30,
             what="every call slot taken")
    waiting = submit_job(client, "wire", "waits for a slot, then is cancelled")
    wait_for(lambda: client.get(f"/v1/jobs/{waiting}").json()["status"] == "running", 30,
             what="the job to be claimed while every slot is busy")
    assert client.post(f"/v1/jobs/{waiting}/cancel").status_code == 200
    assert {finish_job(client, job_id)["status"] for job_id in holders} == {"succeeded"}
    # The freed slots went to nobody: a later job still gets one, and the cancelled one never called.
    server.behaviour = wire.answer()
    assert finish_job(client, submit_job(client, "wire", "after the cancel"))["status"] == "succeeded"
    assert "waits for a slot, then is cancelled" not in server.prompts()
    job = client.get(f"/v1/jobs/{waiting}").json()
    assert job["status"] == "cancelled" and job["history"] == []
