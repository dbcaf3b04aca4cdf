"""Issue 16, item 4: `POST /v1/embeddings` is a job kind, driven with the official `openai` SDK against real workers
and the simulator (OpenAI-, Azure- and Gemini-shaped partners answering embeddings).

The module runs a fleet of its own (simulator, API, worker) on a Redis database of its own, with partners that have
an `embedding_model`, so making one fail cannot disturb anyone else's partners.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway_core.jobs import vectors
from partner_simulator import SimulatedPartner, SimulatorConfig
from partner_simulator.embeddings_wire import DEFAULT_DIMENSIONS, vector_for
from tests.helpers import FleetEnv, RedisDatabases, finish_job, free_port, http_ok, wait_for
from tests.simulator_process import running_simulator

KEY = "test-key-embeddings"
CONFIG = """
partners:
  emb-openai:
    adapter: openai
    base_url: {sim}/emb-openai/v1
    model: sim-gpt
    embedding_model: text-embedding-3-small
    api_key: sk-emb
    timeout_s: 4
    retry: {{max_attempts: 2, base_delay_s: 0.05, max_delay_s: 1}}
    breaker: {{enabled: false}}
    fallback: [emb-azure]
  emb-azure:
    adapter: azure_openai
    base_url: {sim}/emb-azure
    model: sim-gpt-deployment
    embedding_model: embedding-deployment
    api_version: "2024-10-21"
    api_key: azure-emb
    timeout_s: 4
    retry: {{max_attempts: 2, base_delay_s: 0.05, max_delay_s: 1}}
    breaker: {{enabled: false}}
  emb-gemini:
    adapter: gemini
    base_url: {sim}/emb-gemini
    model: sim-gemini-flash
    embedding_model: text-embedding-004
    api_key: gemini-emb
    timeout_s: 4
  chat-only:
    adapter: openai
    base_url: {sim}/emb-openai/v1
    model: sim-gpt
    api_key: sk-emb
    timeout_s: 4
tenants:
  dev:
    api_key: {key}
    admin: true
routes:
  text-embedding-3-small: emb-openai
"""
PARTNERS = "emb-openai,emb-azure,emb-gemini,chat-only"


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    config = SimulatorConfig(record_bodies=True, partners={
        "emb-openai": SimulatedPartner(kind="openai", model="sim-gpt"),
        "emb-azure": SimulatedPartner(kind="azure_openai", model="sim-gpt-deployment"),
        "emb-gemini": SimulatedPartner(kind="gemini", model="sim-gemini-flash"),
    })
    with running_simulator(config) as url:
        yield url


@pytest.fixture(scope="module")
def embedding_fleet(tmp_path_factory: pytest.TempPathFactory, redis_databases: RedisDatabases,
                    simulator: str) -> Iterator[FleetEnv]:
    home: Path = tmp_path_factory.mktemp("fedgate-embeddings")
    config = home / "config.yaml"
    config.write_text(CONFIG.format(sim=simulator, key=KEY))
    api_port = free_port()
    env = {**os.environ, "FEDGATE_HOME": str(home), "FEDGATE_REDIS_URL": redis_databases.url(),
           "FEDGATE_CONFIG": str(config), "FEDGATE_SIMULATOR_URL": simulator, "FEDGATE_API_PORT": str(api_port),
           "FEDGATE_API_URL": f"http://127.0.0.1:{api_port}", "FEDGATE_API_KEY": KEY,
           "FEDGATE_VISIBILITY_TIMEOUT_S": "10"}
    own = FleetEnv(home, env)
    own.spawn("embeddings-api", "api")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{api_port}/healthz"), 30, what="api")
    own.start_worker(PARTNERS, concurrency=8)
    yield own
    own.stop_all()


@pytest.fixture()
def sdk(embedding_fleet: FleetEnv) -> openai.OpenAI:
    return openai.OpenAI(base_url=embedding_fleet.env["FEDGATE_API_URL"] + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture()
def api(embedding_fleet: FleetEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=embedding_fleet.env["FEDGATE_API_URL"], headers={"authorization": f"Bearer {KEY}"},
                      timeout=60) as client:
        yield client


@pytest.fixture()
def sim(simulator: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator, timeout=10) as client:
        for name in ("emb-openai", "emb-azure", "emb-gemini"):
            client.put(f"/_sim/partners/{name}", json={"error_rate": 0}).raise_for_status()
        yield client


def received(sim: httpx.Client, partner: str, marker: str) -> list[dict[str, Any]]:
    """The bodies `partner` received that hold `marker` (this test's own calls)."""
    bodies: list[str] = sim.get(f"/_sim/requests/{partner}").json()["bodies"]
    return [json.loads(body) for body in bodies if marker in body]


def close_to(got: list[float], expected: list[float]) -> bool:
    return len(got) == len(expected) and all(abs(a - b) < 1e-6 for a, b in zip(got, expected, strict=True))


def test_a_string_comes_back_as_one_vector_through_the_sdk_default_base64(
        sdk: openai.OpenAI, api: httpx.Client, sim: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    text = f"hello {marker}"
    raw = sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text)  # base64 on the wire
    result = raw.parse()
    assert result.object == "list" and result.model == "text-embedding-3-small"
    assert len(result.data) == 1 and result.data[0].index == 0
    assert close_to(result.data[0].embedding, vector_for(text))
    assert result.usage.prompt_tokens > 0 and result.usage.total_tokens == result.usage.prompt_tokens
    [body] = received(sim, "emb-openai", marker)
    assert body["model"] == "text-embedding-3-small" and body["input"] == [text]
    job = api.get(f"/v1/jobs/{raw.headers['x-fedgate-job-id']}").json()
    assert job["kind"] == "embedding" and job["status"] == "succeeded" and job["answered_by"] == "emb-openai"
    assert job["embeddings"] == {"count": 1, "dimensions": DEFAULT_DIMENSIONS}
    assert job["output"] is None  # the vectors are the embeddings endpoint's answer, not the job view's


def test_a_list_as_floats_with_dimensions(sdk: openai.OpenAI, api: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    texts = [f"first {marker}", f"second {marker}", f"third {marker}"]
    response = httpx.post(f"{sdk.base_url}embeddings", headers={"authorization": f"Bearer {KEY}"}, timeout=60,
                          json={"model": "emb-openai", "input": texts, "encoding_format": "float", "dimensions": 8})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == [0, 1, 2]
    assert all(isinstance(value, float) for value in data[0]["embedding"])
    for item, text in zip(data, texts, strict=True):
        assert close_to(item["embedding"], vector_for(text, 8))
    listed = sdk.embeddings.create(model="emb-openai", input=texts, encoding_format="float")
    assert [len(item.embedding) for item in listed.data] == [DEFAULT_DIMENSIONS] * 3


def test_personal_data_is_redacted_before_the_partner(sdk: openai.OpenAI, api: httpx.Client,
                                                      sim: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    raw = sdk.embeddings.with_raw_response.create(
        model="emb-openai", input=[f"mail bob@example.org about {marker}", f"nothing personal {marker}"])
    assert len(raw.parse().data) == 2
    [body] = received(sim, "emb-openai", marker)
    assert "bob@example.org" not in json.dumps(body)
    assert "EMAIL" in body["input"][0] and body["input"][1] == f"nothing personal {marker}"
    job = api.get(f"/v1/jobs/{raw.headers['x-fedgate-job-id']}").json()
    assert job["redaction_audit"]["emb-openai"] == {"EMAIL_ADDRESS": 1}
    # The partner embedded the redacted text: nothing to restore in vectors.
    assert close_to(raw.parse().data[0].embedding, vector_for(body["input"][0]))


def test_azure_and_gemini_wires(sdk: openai.OpenAI, sim: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    azure = sdk.embeddings.create(model="emb-azure", input=f"azure {marker}", dimensions=4)
    assert close_to(azure.data[0].embedding, vector_for(f"azure {marker}", 4))
    [azure_body] = received(sim, "emb-azure", marker)
    assert "model" not in azure_body and azure_body["dimensions"] == 4
    gemini = sdk.embeddings.create(model="emb-gemini", input=[f"gemini {marker}", f"two {marker}"])
    assert close_to(gemini.data[1].embedding, vector_for(f"two {marker}"))
    assert gemini.usage.prompt_tokens > 0  # Gemini reports none: the gateway's estimate
    [gemini_body] = received(sim, "emb-gemini", marker)
    assert gemini_body["requests"][0]["model"] == "models/text-embedding-004"
    with pytest.raises(openai.BadRequestError, match="user"):  # Gemini has no field for it: refused, not dropped
        sdk.embeddings.create(model="emb-gemini", input="x", user="someone")


def test_refusals_name_what_is_wrong(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        sdk.embeddings.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError, match="embedding_model") as refused:
        sdk.embeddings.create(model="chat-only", input="hi")
    assert refused.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="token arrays"):
        sdk.embeddings.create(model="emb-openai", input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        sdk.embeddings.create(model="emb-openai", input="hi", extra_body={"logit_bias": {}})


def test_a_failing_partner_fails_over(sdk: openai.OpenAI, api: httpx.Client, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/emb-openai", json={"error_rate": 1, "error_status": 500}).raise_for_status()
    marker = uuid.uuid4().hex
    started = time.monotonic()
    raw = sdk.embeddings.with_raw_response.create(model="emb-openai", input=f"fail over {marker}")
    assert close_to(raw.parse().data[0].embedding, vector_for(f"fail over {marker}"))
    assert time.monotonic() - started < 30
    assert len(received(sim, "emb-openai", marker)) == 2  # max_attempts, then the fallback
    assert len(received(sim, "emb-azure", marker)) == 1
    job = finish_job(api, raw.headers["x-fedgate-job-id"])
    assert job["answered_by"] == "emb-azure"
    assert [a["outcome"] for a in job["history"]] == ["retryable", "retryable", "ok"]


def test_the_stored_output_is_packed(embedding_fleet: FleetEnv, sdk: openai.OpenAI) -> None:
    raw = sdk.embeddings.with_raw_response.create(model="emb-openai", input=["a", "b"])
    job_id = raw.headers["x-fedgate-job-id"]
    with redis.Redis.from_url(embedding_fleet.env["FEDGATE_REDIS_URL"], decode_responses=True) as client:
        fields = client.hgetall(f"fg:job:{job_id}")
    assert fields["kind"] == "embedding"
    assert "placeholder_map" not in fields  # nothing to restore in vectors
    assert fields["output"] and vectors.PREFIX not in fields["output"]  # encrypted at rest


def embedding_line(custom_id: str, **body: Any) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body})


def test_a_batch_of_embeddings_end_to_end(sdk: openai.OpenAI, sim: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    lines = [
        embedding_line("floats", model="text-embedding-3-small", input=[f"one {marker}", f"two {marker}"]),
        embedding_line("base64", model="emb-gemini", input=f"three {marker}", encoding_format="base64"),
        embedding_line("no-embeddings", model="chat-only", input="four"),
    ]
    upload = sdk.files.create(file=("in.jsonl", io.BytesIO(("\n".join(lines) + "\n").encode())), purpose="batch")
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch.endpoint == "/v1/embeddings"
    done = wait_for(lambda: (b := sdk.batches.retrieve(batch.id)).status in ("completed", "failed") and b, 60, 0.2,
                    what="the batch to finish")
    assert done.status == "completed", done.errors
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert done.output_file_id and done.error_file_id
    output_lines = sdk.files.content(done.output_file_id).text.splitlines()
    output = {row["custom_id"]: row for row in map(json.loads, output_lines)}
    floats = openai.types.CreateEmbeddingResponse.model_validate(output["floats"]["response"]["body"])
    assert floats.model == "text-embedding-3-small"
    assert close_to(floats.data[1].embedding, vector_for(f"two {marker}"))
    encoded = output["base64"]["response"]["body"]["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = vectors.pack_bytes(1, DEFAULT_DIMENSIONS, base64.b64decode(encoded))
    assert close_to(vectors.rows_float(decoded)[0], vector_for(f"three {marker}"))
    [refused] = [json.loads(line) for line in sdk.files.content(done.error_file_id).text.splitlines()]
    assert refused["custom_id"] == "no-embeddings" and "embedding_model" in refused["error"]["message"]
    assert len(received(sim, "emb-openai", marker)) == 1 and len(received(sim, "emb-gemini", marker)) == 1


def test_a_batch_mixing_endpoints_fails_by_line(sdk: openai.OpenAI) -> None:
    lines = [embedding_line("e", model="emb-openai", input="x"),
             json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "emb-openai", "messages": [{"role": "user", "content": "hi"}]}})]
    upload = sdk.files.create(file=("in.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch")
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "mismatched_url")]
