"""Issue 16, item 1: `stream: true` through the fleet, driven by the official `openai` SDK.

The call is a job whose worker relays the partner's own stream (OpenAI SSE, Anthropic message events, Gemini
streamGenerateContent) through Redis to the API process holding the request. This module runs its own API and
worker on a Redis database of its own (it makes partners fail), against the session's simulator, whose streams
it paces and cuts through the partners' behaviour controls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import ROOT, FleetEnv, RedisDatabases, calls_with, finish_job, free_port, http_ok, wait_for

CONFIG = """
partners:
  sim-openai:
    adapter: openai
    base_url: {sim}/sim-openai/v1
    model: sim-gpt
    api_key: sk-sim-test
    timeout_s: 10
    retry: {{max_attempts: 2, base_delay_s: 0.05, max_delay_s: 0.2}}
    breaker: {{enabled: false}}
    fallback: [sim-anthropic]
  sim-anthropic:
    adapter: anthropic
    base_url: {sim}/sim-anthropic
    model: sim-claude
    api_key: sk-ant-test
    timeout_s: 10
    breaker: {{enabled: false}}
  sim-gemini:
    adapter: gemini
    base_url: {sim}/sim-gemini
    model: sim-gemini-flash
    api_key: gemini-sim-test
    timeout_s: 10
  sim-azure:
    adapter: azure_openai
    base_url: {sim}/sim-azure
    model: sim-gpt-4o
    deployment: sim-gpt-deployment
    api_version: "2024-10-21"
    api_key: azure-sim-test
    timeout_s: 10
tenants:
  dev:
    api_key: test-key-stream
    admin: true
"""
PARTNERS = ("sim-openai", "sim-anthropic", "sim-gemini", "sim-azure")


@pytest.fixture(scope="module")
def stream_fleet(fleet: FleetEnv, redis_databases: RedisDatabases) -> Iterator[FleetEnv]:
    config = fleet.home / "stream-config.yaml"
    config.write_text(CONFIG.format(sim=fleet.env["FEDGATE_SIMULATOR_URL"]))
    api_port = free_port()
    env = {**fleet.env, "FEDGATE_CONFIG": str(config), "FEDGATE_REDIS_URL": redis_databases.url(),
           "FEDGATE_API_PORT": str(api_port), "FEDGATE_API_URL": f"http://127.0.0.1:{api_port}",
           "FEDGATE_API_KEY": "test-key-stream", "FEDGATE_VISIBILITY_TIMEOUT_S": "30"}
    own = FleetEnv(fleet.home, env)
    own.spawn("stream-api", "api")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{api_port}/healthz"), 30, what="api")
    own.start_worker(",".join(PARTNERS), concurrency=20)
    yield own
    own.stop_all()


@pytest.fixture()
def sdk(stream_fleet: FleetEnv, sim: httpx.Client) -> openai.OpenAI:
    """The SDK on the module's gateway; every simulated partner streams one character per delta."""
    for name in PARTNERS:
        sim.put(f"/_sim/partners/{name}", json={"stream_chunk_chars": 1}).raise_for_status()
    return openai.OpenAI(base_url=stream_fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-stream",
                         max_retries=0, timeout=30)


@pytest.fixture()
def api(stream_fleet: FleetEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stream_fleet.env["FEDGATE_API_URL"], timeout=30,
                      headers={"authorization": "Bearer test-key-stream"}) as client:
        yield client


def _stream(sdk: openai.OpenAI, model: str, prompt: str, **options: Any) -> tuple[list[Any], str]:
    """The chunks of one streamed chat completion, and the job id the gateway answered with."""
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True, **options)
    return list(raw.parse()), raw.headers["x-fedgate-job-id"]


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_streamed_answer_equals_the_non_streamed_one(sdk: openai.OpenAI, api: httpx.Client) -> None:
    whole = sdk.chat.completions.create(model="sim-openai", messages=[{"role": "user", "content": "tell me more"}])
    chunks, job_id = _stream(sdk, "sim-openai", "tell me more", stream_options={"include_usage": True})
    expected = "Simulated reply from sim-openai: tell me more"
    assert whole.choices[0].message.content == expected == _text(chunks)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert sum(1 for d in deltas if d.content) > 10  # relayed as the partner streamed it, not cut up afterwards
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.object == "chat.completion.chunk" and c.id == f"chatcmpl-{job_id}" for c in chunks)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None and usage_chunk.usage.total_tokens > 0
    job = finish_job(api, job_id)  # still a job: visible, with the whole output stored
    assert (job["status"], job["output"], job["answered_by"]) == ("succeeded", expected, "sim-openai")
    assert job["usage"]["completion_tokens"] == usage_chunk.usage.completion_tokens


def test_without_include_usage_there_is_no_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks, _ = _stream(sdk, "sim-openai", "no usage please")
    assert all(c.choices and c.usage is None for c in chunks)


def test_the_sdks_stream_helper_works(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(model="sim-openai", messages=[{"role": "user", "content": "helper"}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Simulated reply from sim-openai: helper"
    assert final.choices[0].finish_reason == "stop"


def test_a_placeholder_split_across_chunks_is_restored(sdk: openai.OpenAI, sim: httpx.Client) -> None:
    chunks, _ = _stream(sdk, "sim-openai", "Mail streamed.bob@example.org today")
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == "Simulated reply from sim-openai: Mail streamed.bob@example.org today"
    assert not any("<" in piece for piece in pieces)  # no half placeholder ever reached the client
    assert calls_with(sim, "sim-openai", "streamed.bob@example.org") == 0  # the partner never saw the address
    assert calls_with(sim, "sim-openai", "<EMAIL_ADDRESS_1>") >= 1


@pytest.mark.parametrize("partner", ["sim-anthropic", "sim-gemini", "sim-azure"])
def test_anthropic_gemini_and_azure_shaped_partners_stream(sdk: openai.OpenAI, sim: httpx.Client,
                                                           partner: str) -> None:
    chunks, _ = _stream(sdk, partner, f"stream from {partner} to a.b@example.com",
                        stream_options={"include_usage": True})
    assert _text(chunks) == f"Simulated reply from {partner}: stream from {partner} to a.b@example.com"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert sim.get("/_sim/stats").json()["partners"][partner]["streams"] >= 1  # the partner was asked to stream


def test_a_failure_before_the_first_token_is_invisible(sdk: openai.OpenAI, sim: httpx.Client,
                                                       api: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-openai", json={"stream_cut_after_chars": 0})  # every stream ends before its text
    chunks, job_id = _stream(sdk, "sim-openai", "fall over quietly")
    assert _text(chunks) == "Simulated reply from sim-anthropic: fall over quietly"
    job = finish_job(api, job_id)
    assert [(a["partner"], a["outcome"]) for a in job["history"]] == [
        ("sim-openai", "retryable"), ("sim-openai", "retryable"), ("sim-anthropic", "ok")]


def test_a_failure_after_the_first_token_ends_the_stream_with_an_error(sdk: openai.OpenAI, sim: httpx.Client,
                                                                       api: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-openai", json={"stream_cut_after_chars": 12})
    raw = sdk.chat.completions.with_raw_response.create(
        model="sim-openai", messages=[{"role": "user", "content": "cut me short"}], stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError, match="failed after the answer began"):
        for chunk in raw.parse():
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Simulated reply from sim-openai: cut me short"[:12]
    job = finish_job(api, raw.headers["x-fedgate-job-id"])  # the job went on with its routing
    assert (job["status"], job["answered_by"]) == ("succeeded", "sim-anthropic")
    assert job["output"] == "Simulated reply from sim-anthropic: cut me short"


def test_a_job_that_fails_before_answering_is_a_server_error(sdk: openai.OpenAI, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-gemini", json={"error_rate": 1, "error_status": 400})
    with pytest.raises(openai.InternalServerError, match="dead_lettered"):
        sdk.chat.completions.create(model="sim-gemini", messages=[{"role": "user", "content": "x"}], stream=True)


def test_a_client_that_disconnects_cancels_the_job(sdk: openai.OpenAI, sim: httpx.Client,
                                                   api: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-openai", json={"stream_token_delay_ms": 50})  # 20 characters a second
    raw = sdk.chat.completions.with_raw_response.create(
        model="sim-openai", messages=[{"role": "user", "content": "a long answer " * 10}], stream=True)
    stream = raw.parse()
    for received, _ in enumerate(stream):
        if received == 3:
            break
    stream.close()
    job_id = raw.headers["x-fedgate-job-id"]
    job = wait_for(lambda: (j := api.get(f"/v1/jobs/{job_id}").json())["status"] == "cancelled" and j, 10,
                   what="the job to be cancelled")
    assert job["error"] == "cancelled by the client"

    def partner_stream_stopped() -> bool:
        stats = sim.get("/_sim/stats").json()["partners"]["sim-openai"]
        return bool(stats["streams_cut"] == 1 and stats["streams_open"] == 0)

    wait_for(partner_stream_stopped, 3, what="the partner's stream to be cut")  # the answer needs ~9 s more


def follow_events(api: httpx.Client, job_id: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with api.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_a_producer_follows_a_streaming_job(api: httpx.Client, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"stream_token_delay_ms": 5})
    job_id = api.post("/v1/jobs", json={"partner": "sim-anthropic", "prompt": "follow me", "stream": True}).json()["id"]
    events = follow_events(api, job_id)
    names = [name for name, _ in events]
    assert names[-2:] == ["finish", "job"] and names.count("delta") > 10
    text = "".join(data["text"] for name, data in events if name == "delta")
    assert text == events[-1][1]["output"] == "Simulated reply from sim-anthropic: follow me"
    assert events[-1][1]["status"] == "succeeded"
    again = follow_events(api, job_id)  # a finished job answers at once, with what it streamed
    assert [name for name, _ in again] == names and again[-1][1]["id"] == job_id


def test_a_producer_follows_a_job_that_does_not_stream(api: httpx.Client) -> None:
    job_id = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "whole answer"}).json()["id"]
    events = follow_events(api, job_id)
    assert [name for name, _ in events] == ["job"]
    assert events[0][1]["output"] == "Simulated reply from sim-openai: whole answer"


def test_only_the_owner_follows_a_job(api: httpx.Client, stream_fleet: FleetEnv) -> None:
    assert api.get("/v1/jobs/job_nope/stream").status_code == 404


def test_an_output_contract_streams_one_validated_chunk(api: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert api.post("/v1/admin/contracts", json={"name": "stream-city", "schema": schema}).status_code == 201
    job_id = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "where?", "stream": True,
                                        "contract": "stream-city"}).json()["id"]
    events = follow_events(api, job_id)
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) == 1 and json.loads(deltas[0]) == {"city": "sim"} == events[-1][1]["parsed"]


def test_stream_options_without_stream_is_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        sdk.chat.completions.create(model="sim-openai", messages=[{"role": "user", "content": "x"}],
                                    stream_options={"include_usage": True})


def test_fedgate_submit_stream_prints_tokens_as_they_come(stream_fleet: FleetEnv, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"stream_chunk_chars": 1, "stream_token_delay_ms": 30})
    expected = "Simulated reply from sim-anthropic: printed by the CLI"  # ~1.6 s of deltas
    process = subprocess.Popen([sys.executable, "-m", "gateway_api.cli", "submit", "--partner", "sim-anthropic",
                                "--prompt", "printed by the CLI", "--stream"], env=stream_fleet.env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    # One byte straight from the pipe: a buffered read could take more, which communicate() (reading the pipe
    # itself) would then never see.
    first = os.read(process.stdout.fileno(), 1)
    first_at = time.monotonic()
    rest, errors = process.communicate(timeout=30)
    ended_at = time.monotonic()
    assert process.returncode == 0, errors
    assert (first + rest).decode() == expected + "\n"
    assert ended_at - first_at > 0.5  # the first token was on screen long before the answer was complete
