"""Issue 16, item 4, below the fleet: the embeddings request model, each embedding adapter's wire body and answer
parsing (against the official SDK's types), packed vectors, and the simulator's embeddings routes."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import openai
import pytest
from google.genai import types as genai_types
from openai.types import CreateEmbeddingResponse, embedding_create_params
from pydantic import TypeAdapter, ValidationError

from gateway_core.config import GatewayConfig, PartnerConfig
from gateway_core.errors import RequestError
from gateway_core.jobs import vectors
from gateway_core.jobs.embedding_request import (
    MAX_INPUTS,
    EmbeddingRequest,
    embedding_list,
    embedding_partner,
    encoded,
)
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters.base import CallRequest, HttpPool, Outcome
from gateway_core.partners.adapters.embeddings import EmbeddingAdapter, embedding_adapter_for
from partner_simulator import SimulatedPartner, SimulatorConfig, create_app
from partner_simulator.embeddings_wire import DEFAULT_DIMENSIONS, vector_for
from tests.unit.test_sdk_conformance import strict_params

EMBEDDING_PARAMS = strict_params(embedding_create_params.EmbeddingCreateParams)
TEXTS = ["mail <EMAIL_ADDRESS_1>", "second text"]


def partner(adapter: str, **fields: Any) -> PartnerConfig:
    return PartnerConfig.model_validate({"name": f"p-{adapter}", "adapter": adapter, "base_url": "https://p.example",
                                         "model": "chat-model", "api_key": "k", **fields})


def embedder(adapter: str, **fields: Any) -> EmbeddingAdapter:
    found = embedding_adapter_for(partner(adapter, embedding_model="embed-model", **fields), HttpPool(1))
    assert found is not None
    return found


def flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def call(dimensions: int | None = None, user: str | None = None) -> CallRequest:
    extra = {k: v for k, v in {"dimensions": dimensions, "user": user}.items() if v is not None}
    return CallRequest(messages=[Message(role="user", content=text) for text in TEXTS], extra=extra)


# --- the request model ------------------------------------------------------------------------------------------


def sdk_request_body(**kwargs: Any) -> dict[str, Any]:
    """What the official SDK sends for `client.embeddings.create(**kwargs)`."""
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        one = vectors.pack([[0.5]])
        return httpx.Response(200, json=embedding_list(encoded(one, "base64"), model="m", prompt_tokens=1))

    client = openai.OpenAI(base_url="http://gateway/v1", api_key="k", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(answer)))
    client.embeddings.create(**kwargs)
    return sent[0]


@pytest.mark.parametrize("kwargs", [
    {"model": "m", "input": "one text"},
    {"model": "m", "input": ["a", "b"], "dimensions": 8, "user": "u-1"},
    {"model": "m", "input": "x", "encoding_format": "float"},
])
def test_what_the_sdk_sends_is_accepted_and_is_an_embedding_create_params(kwargs: dict[str, Any]) -> None:
    body = sdk_request_body(**kwargs)
    EMBEDDING_PARAMS.validate_python(body)
    request = EmbeddingRequest.model_validate(body)
    assert request.texts() == ([kwargs["input"]] if isinstance(kwargs["input"], str) else kwargs["input"])
    assert request.encoding_format == body.get("encoding_format", "float")  # the SDK asks base64 unless told
    EMBEDDING_PARAMS.validate_python(request.model_dump(exclude_none=True))


@pytest.mark.parametrize(("body", "error_type", "where"), [
    ({"model": "m", "input": [1, 2, 3]}, "unsupported", ("input",)),
    ({"model": "m", "input": [[1, 2], [3]]}, "unsupported", ("input",)),
    ({"model": "m", "input": ["x"] * (MAX_INPUTS + 1)}, "unsupported", ("input",)),
    ({"model": "m", "input": ""}, "value_error", ("input",)),
    ({"model": "m", "input": []}, "value_error", ("input",)),
    ({"model": "m", "input": ["a", ""]}, "value_error", ("input",)),
    ({"model": "m", "input": "x", "encoding_format": "int8"}, "literal_error", ("encoding_format",)),
    ({"model": "m", "input": "x", "dimensions": "8"}, "type_error", ("dimensions",)),
    ({"model": "m", "input": "x", "logit_bias": {}}, "extra_forbidden", ("logit_bias",)),
    ({"input": "x"}, "missing", ("model",)),
])
def test_bad_requests_are_refused_naming_the_field(body: dict[str, Any], error_type: str,
                                                   where: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as refused:
        EmbeddingRequest.model_validate(body)
    first = refused.value.errors()[0]
    assert first["type"] == error_type
    assert first["loc"][:len(where)] == where or first["loc"][0] == where[0]
    if error_type == "unsupported":
        assert first["msg"].startswith("input:")


def test_the_job_holds_one_user_message_per_text_even_past_the_conversation_limit() -> None:
    request = EmbeddingRequest.model_validate({"model": "m", "input": ["t"] * MAX_INPUTS, "dimensions": 4})
    submission = request.submission("p")
    assert len(submission.conversation()) == MAX_INPUTS
    assert {m.role for m in submission.conversation()} == {"user"}
    assert request.params() == {"encoding_format": "float", "dimensions": 4}


def config(**partners: PartnerConfig) -> GatewayConfig:
    return GatewayConfig.model_validate({"partners": {name: p.model_copy(update={"name": name})
                                                      for name, p in partners.items()},
                                         "tenants": {"t": {"api_key": "k"}}, "routes": {"embed": "oa"}})


def test_the_partner_is_found_by_model_or_refused_as_openai_would() -> None:
    gateway = config(oa=partner("openai", embedding_model="e"), gem=partner("gemini", embedding_model="g"),
                     chat=partner("openai"), claude=partner("anthropic"))
    request = EmbeddingRequest.model_validate
    assert embedding_partner(gateway, request({"model": "embed", "input": "x"})) == "oa"
    assert embedding_partner(gateway, request({"model": "gem", "input": "x"})) == "gem"
    refusals = [
        ({"model": "nope", "input": "x"}, 404, "model"),
        ({"model": "chat", "input": "x"}, 400, "model"),  # no embedding_model
        ({"model": "claude", "input": "x"}, 400, "model"),  # no embeddings wire at all
        ({"model": "gem", "input": ["x"] * 101}, 400, "input"),  # Gemini takes 100 per call
        ({"model": "gem", "input": "x", "user": "u"}, 400, "user"),  # Gemini has no field for it
    ]
    for body, status, param in refusals:
        with pytest.raises(RequestError) as refused:
            embedding_partner(gateway, request(body))
        assert (refused.value.status_code, refused.value.param) == (status, param), body
    with pytest.raises(RequestError, match="embedding_model"):
        embedding_partner(gateway, request({"model": "chat", "input": "x"}))


# --- packed vectors ---------------------------------------------------------------------------------------------


def test_vectors_pack_to_float32_and_back() -> None:
    rows = [vector_for("a", 5), vector_for("b", 5)]
    packed = vectors.pack(rows)
    assert vectors.shape(packed) == (2, 5)
    assert vectors.rows_float(packed) == [[float(f"{v:.9g}") for v in row] for row in rows]
    assert [struct.unpack("<5f", base64.b64decode(row)) for row in vectors.rows_base64(packed)] == [
        tuple(row) for row in rows]
    for bad in ([], [[1.0], [1.0, 2.0]], [[]]):
        with pytest.raises(ValueError):
            vectors.pack(bad)
    with pytest.raises(ValueError):
        vectors.pack_bytes(2, 3, b"\0" * 12)


def test_a_thousand_by_1536_batch_is_about_8_mb_before_encryption() -> None:
    packed = vectors.pack_bytes(1000, 1536, b"\0" * (1000 * 1536 * 4))
    assert 8_190_000 < len(packed) < 8_200_000


def test_the_answer_is_openais_and_the_sdk_decodes_base64() -> None:
    packed = vectors.pack([vector_for("a"), vector_for("b")])
    for encoding in ("float", "base64"):
        body = embedding_list(encoded(packed, encoding), model="embed", prompt_tokens=7)
        if encoding == "float":  # the SDK's type says floats; base64 strings it decodes before building it
            CreateEmbeddingResponse.model_validate(body)

        def answer(request: httpx.Request, body: dict[str, Any] = body) -> httpx.Response:
            return httpx.Response(200, json=body)

        client = openai.OpenAI(base_url="http://gateway/v1", api_key="k", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(answer)))
        got = client.embeddings.create(model="embed", input=["a", "b"],
                                       **({"encoding_format": "float"} if encoding == "float" else {}))
        assert got.usage.prompt_tokens == 7 and got.usage.total_tokens == 7
        for item, text in zip(got.data, ["a", "b"], strict=True):
            assert item.embedding == pytest.approx(vector_for(text), abs=1e-7)


# --- adapters: what goes on the wire, what comes back -----------------------------------------------------------


def test_openai_body_is_an_embedding_create_params_asking_for_base64() -> None:
    adapter = embedder("openai")
    assert adapter.endpoint() == "https://p.example/embeddings"
    assert adapter.headers() == {"authorization": "Bearer k"}
    body = adapter.body(call(dimensions=8, user="u"))
    EMBEDDING_PARAMS.validate_python(body)
    assert body == {"model": "embed-model", "input": TEXTS, "encoding_format": "base64", "dimensions": 8, "user": "u"}


def test_azure_body_is_openais_without_model_at_the_embedding_deployment() -> None:
    adapter = embedder("azure_openai", api_version="2024-10-21")
    assert adapter.endpoint() == ("https://p.example/openai/deployments/embed-model/embeddings"
                                  "?api-version=2024-10-21")
    assert adapter.headers() == {"api-key": "k"}
    body = adapter.body(call(dimensions=8))
    assert "model" not in body
    EMBEDDING_PARAMS.validate_python({**body, "model": "embed-model"})


def test_gemini_body_is_a_batch_of_google_genai_contents() -> None:
    adapter = embedder("gemini")
    assert adapter.endpoint() == "https://p.example/v1beta/models/embed-model:batchEmbedContents"
    body = adapter.body(call(dimensions=8))
    assert [r["model"] for r in body["requests"]] == ["models/embed-model"] * 2
    assert {r["outputDimensionality"] for r in body["requests"]} == {8}
    contents = TypeAdapter(list[genai_types.Content]).validate_python([r["content"] for r in body["requests"]])
    assert [c.parts[0].text for c in contents if c.parts] == TEXTS


def test_partners_without_embeddings_have_no_embedding_adapter() -> None:
    assert embedding_adapter_for(partner("openai"), HttpPool(1)) is None
    assert embedding_adapter_for(partner("anthropic", embedding_model="x"), HttpPool(1)) is None
    assert embedding_adapter_for(partner("generic", embedding_model="x"), HttpPool(1)) is None


OPENAI_ANSWER_FLOATS = {"object": "list", "model": "embed-model", "usage": {"prompt_tokens": 5, "total_tokens": 5},
                        "data": [{"object": "embedding", "index": 1, "embedding": vector_for(TEXTS[1], 4)},
                                 {"object": "embedding", "index": 0, "embedding": vector_for(TEXTS[0], 4)}]}
OPENAI_ANSWER_BASE64 = {**OPENAI_ANSWER_FLOATS, "data": [
    {"object": "embedding", "index": i,
     "embedding": base64.b64encode(struct.pack("<4f", *vector_for(text, 4))).decode()}
    for i, text in enumerate(TEXTS)]}


@pytest.mark.parametrize("answer", [OPENAI_ANSWER_FLOATS, OPENAI_ANSWER_BASE64])
@pytest.mark.parametrize("adapter", ["openai", "azure_openai"])
def test_openai_style_answers_are_read_in_index_order(adapter: str, answer: dict[str, Any]) -> None:
    if answer is OPENAI_ANSWER_FLOATS:
        CreateEmbeddingResponse.model_validate(answer)
    response = embedder(adapter).interpret(200, json.dumps(answer).encode(), httpx.Headers())
    assert response.outcome is Outcome.OK and response.text is not None
    assert flat(vectors.rows_float(response.text)) == pytest.approx(flat([vector_for(t, 4) for t in TEXTS]), abs=1e-7)
    assert response.usage.prompt_tokens == 5


def test_gemini_answers_are_read() -> None:
    answer = {"embeddings": [{"values": vector_for(t, 4)} for t in TEXTS], "usageMetadata": {"promptTokenCount": 9}}
    genai_types.EmbedContentResponse.model_validate({"embeddings": answer["embeddings"]})
    response = embedder("gemini").interpret(200, json.dumps(answer).encode(), httpx.Headers())
    assert response.outcome is Outcome.OK and response.text is not None
    assert vectors.shape(response.text) == (2, 4) and response.usage.prompt_tokens == 9


@pytest.mark.parametrize(("status", "content", "outcome"), [
    (500, b'{"error": {"message": "boom"}}', Outcome.RETRYABLE),
    (429, b'{"error": {"message": "slow down"}}', Outcome.RETRYABLE),
    (400, b'{"error": {"message": "bad input"}}', Outcome.FATAL),
    (200, b"<html>", Outcome.RETRYABLE),
    (200, b'{"data": [{"index": 0, "embedding": "not base64!"}]}', Outcome.RETRYABLE),
    (200, b'{"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]}', Outcome.RETRYABLE),
])
def test_failures_map_to_outcomes_as_chat_calls_do(status: int, content: bytes, outcome: Outcome) -> None:
    response = embedder("openai").interpret(status, content, httpx.Headers({"content-type": "application/json"}))
    assert response.outcome is outcome


# --- the simulator ------------------------------------------------------------------------------------------------


SIM = SimulatorConfig(record_bodies=True, partners={
    "oa": SimulatedPartner(kind="openai", model="sim-gpt"),
    "az": SimulatedPartner(kind="azure_openai", model="dep"),
    "gem": SimulatedPartner(kind="gemini", model="sim-gemini-flash"),
    "claude": SimulatedPartner(kind="anthropic", model="sim-claude"),
})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_simulator_answers_each_wire_and_the_adapters_read_it() -> None:
    app = create_app(SIM)
    adapters = {"oa": embedder("openai"), "az": embedder("azure_openai"), "gem": embedder("gemini")}
    paths = {"oa": "/oa/v1/embeddings", "az": "/az/openai/deployments/embed-model/embeddings?api-version=2024-10-21",
             "gem": "/gem/v1beta/models/embed-model:batchEmbedContents"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        for name, adapter in adapters.items():
            answer = await client.post(paths[name], json=adapter.body(call(dimensions=6)), headers=adapter.headers())
            assert answer.status_code == 200, answer.text
            if name != "gem":  # asked for base64: OpenAI's answer with the vectors as strings
                assert {type(item["embedding"]) for item in answer.json()["data"]} == {str}
            response = adapter.interpret(answer.status_code, answer.content, answer.headers)
            assert response.text is not None
            expected = flat([vector_for(t, 6) for t in TEXTS])
            assert flat(vectors.rows_float(response.text)) == pytest.approx(expected, abs=1e-7)
            recorded = (await client.get(f"/_sim/requests/{name}")).json()["bodies"]
            assert TEXTS[0] in recorded[-1]
        floats = await client.post("/oa/v1/embeddings", json={"model": "m", "input": "hi"},
                                   headers={"authorization": "Bearer k"})
        assert floats.json()["data"][0]["embedding"] == vector_for("hi", DEFAULT_DIMENSIONS)
        refusals = [
            ("/oa/v1/embeddings", {"model": "m", "input": "hi", "bogus": 1}, 400),
            ("/oa/v1/embeddings", {"model": "m", "input": []}, 400),
            ("/az/openai/deployments/d/embeddings", {"input": "hi"}, 404),  # no api-version
            ("/gem/v1beta/models/m:batchEmbedContents", {"requests": [], "extra": 1}, 400),
            ("/claude/v1/embeddings", {"model": "m", "input": "hi"}, 404),  # Anthropic has no embeddings
        ]
        for path, body, status in refusals:
            refused = await client.post(path, json=body, headers={"authorization": "Bearer k", "api-key": "k",
                                                                  "x-goog-api-key": "k"})
            assert refused.status_code == status, (path, refused.text)
        await client.put("/_sim/partners/oa", json={"error_rate": 1, "error_status": 503})
        failed = await client.post("/oa/v1/embeddings", json={"model": "m", "input": "hi"},
                                   headers={"authorization": "Bearer k"})
        assert failed.status_code == 503
