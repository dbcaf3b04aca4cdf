"""Azure OpenAI and Gemini adapters: the requests they build, and calls through the worker's own HTTP stack
(gateway_core.partners.adapters.base.HttpPool: httpx over aiohttp) to the partner simulator served on loopback, which
checks each dialect's URL, auth header and body as the real API does and compresses its answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway_core.config import PartnerConfig
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters import adapter_for
from gateway_core.partners.adapters.azure_openai import DEFAULT_API_VERSION, AzureOpenAIChatAdapter
from gateway_core.partners.adapters.base import (
    CallRequest,
    HttpPool,
    Outcome,
    OutputSchema,
    PartnerAdapter,
    PartnerResponse,
)
from gateway_core.partners.adapters.gemini import GeminiAdapter
from partner_simulator import PartnerBehaviour, SimulatorConfig
from tests.simulator_process import running_simulator

CONVERSATION = [
    Message(role="system", content="You are terse."),
    Message(role="user", content="Hello?"),
    Message(role="assistant", content="Hi."),
    Message(role="system", content="Answer in English."),
    Message(role="user", content="Again."),
]
VERDICT = OutputSchema(
    name="verdict",
    schema={
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}, "score": {"type": "number"}},
        "required": ["label", "score"],
        "additionalProperties": False,
    },
)
SIMULATED = ("sim-azure", "sim-gemini")


def azure(base_url: str = "https://acme.openai.azure.com", **overrides: Any) -> PartnerConfig:
    fields: dict[str, Any] = {"name": "azure", "adapter": "azure_openai", "base_url": base_url,
                              "model": "sim-gpt-deployment", "api_key": "azure-key", "timeout_s": 5}
    return PartnerConfig.model_validate({**fields, **overrides})


def gemini(base_url: str = "https://generativelanguage.googleapis.com", **overrides: Any) -> PartnerConfig:
    fields: dict[str, Any] = {"name": "gemini", "adapter": "gemini", "base_url": base_url,
                              "model": "sim-gemini-flash", "api_key": "gemini-key", "timeout_s": 5}
    return PartnerConfig.model_validate({**fields, **overrides})


def build(config: PartnerConfig) -> PartnerAdapter:
    return adapter_for(config, HttpPool(4))


def call(config: PartnerConfig, request: CallRequest) -> PartnerResponse:
    async def go() -> PartnerResponse:
        pool = HttpPool(4)
        try:
            return await adapter_for(config, pool).call(request)
        finally:
            await pool.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    config = SimulatorConfig.demo().model_copy(update={"record_bodies": True})
    with running_simulator(config) as base_url:
        yield base_url


@pytest.fixture
def sim(served: str) -> Iterator[str]:
    yield served
    for name in SIMULATED:
        httpx.put(f"{served}/_sim/partners/{name}", json=PartnerBehaviour().model_dump())
    httpx.post(f"{served}/_sim/reset")


def behave(sim: str, partner: str, **changes: Any) -> None:
    assert httpx.put(f"{sim}/_sim/partners/{partner}", json=changes).status_code == 200


def received(sim: str, partner: str) -> list[dict[str, Any]]:
    return [json.loads(body) for body in httpx.get(f"{sim}/_sim/requests/{partner}").json()["bodies"]]


def stats(sim: str, partner: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{sim}/_sim/stats").json()["partners"][partner]
    return found


# --- Azure OpenAI: the request -----------------------------------------------------------------------


def test_azure_registry_entry() -> None:
    assert isinstance(build(azure()), AzureOpenAIChatAdapter)


def test_azure_url_names_the_deployment_and_api_version() -> None:
    assert build(azure()).endpoint() == (
        "https://acme.openai.azure.com/openai/deployments/sim-gpt-deployment/chat/completions"
        f"?api-version={DEFAULT_API_VERSION}"
    )
    custom = build(azure(model="gpt-4o", deployment="prod 4o/eu", api_version="2025-01-01-preview"))
    assert custom.endpoint() == (
        "https://acme.openai.azure.com/openai/deployments/prod%204o%2Feu/chat/completions"
        "?api-version=2025-01-01-preview"
    )


def test_azure_authenticates_with_api_key_not_bearer() -> None:
    assert build(azure()).headers() == {"api-key": "azure-key"}
    assert build(azure(api_key=None)).headers() == {}


def test_azure_body_is_openais_without_model() -> None:
    body = build(azure()).body(CallRequest(messages=CONVERSATION, temperature=0.3, output=VERDICT))
    assert "model" not in body
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["max_tokens"] == 1024
    assert body["temperature"] == 0.3
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "verdict",
                                                                              "schema": VERDICT.schema}}


# --- Azure OpenAI: against the simulator ----------------------------------------------------------------


def test_azure_call_reads_text_and_usage(sim: str) -> None:
    result = call(azure(f"{sim}/sim-azure"), CallRequest(messages=CONVERSATION))
    assert result.outcome is Outcome.OK, result.error
    assert result.text == "Simulated reply from sim-azure: Again."
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    [sent] = received(sim, "sim-azure")
    assert "model" not in sent
    assert sum(stats(sim, "sim-azure")["encodings"].values()) == 1  # the answer came compressed


def test_azure_structured_output(sim: str) -> None:
    result = call(azure(f"{sim}/sim-azure"), CallRequest(messages=CONVERSATION, output=VERDICT))
    assert result.outcome is Outcome.OK
    assert json.loads(result.text or "") == {"label": "spam", "score": 1.0}


@pytest.mark.parametrize(
    ("overrides", "status", "message"),
    [
        ({"deployment": "gpt-4o"}, 404, "The API deployment for this resource does not exist"),
        ({"api_key": None}, 401, "Access denied"),
        ({"api_version": "v1"}, 404, "Resource not found"),
    ],
)
def test_azure_misconfiguration_is_fatal_and_says_why(
    sim: str, overrides: dict[str, Any], status: int, message: str
) -> None:
    result = call(azure(f"{sim}/sim-azure", **overrides), CallRequest(messages=CONVERSATION))
    assert (result.outcome, result.status_code) == (Outcome.FATAL, status)
    assert message in (result.error or "")


def test_azure_throttle_is_retryable_after_the_time_it_names(sim: str) -> None:
    behave(sim, "sim-azure", requests_per_minute=1, rate_limiter="sliding_window")
    config = azure(f"{sim}/sim-azure")
    first = call(config, CallRequest(messages=CONVERSATION))
    throttled = call(config, CallRequest(messages=CONVERSATION))
    assert first.outcome is Outcome.OK
    assert (throttled.outcome, throttled.status_code) == (Outcome.RETRYABLE, 429)
    assert throttled.retry_after_s is not None and 50 < throttled.retry_after_s <= 60


@pytest.mark.parametrize(
    "behaviour",
    [{"error_rate": 1, "error_status": 503}, {"html_502_rate": 1}, {"malformed_rate": 1}],
    ids=["503", "html-502", "malformed"],
)
def test_azure_partner_failures_are_retryable(sim: str, behaviour: dict[str, Any]) -> None:
    behave(sim, "sim-azure", **behaviour)
    result = call(azure(f"{sim}/sim-azure"), CallRequest(messages=CONVERSATION))
    assert result.outcome is Outcome.RETRYABLE, result.error


def test_azure_reads_chunked_answers_on_closed_connections(sim: str) -> None:
    behave(sim, "sim-azure", chunked_rate=1, close_connection_rate=1)
    config = azure(f"{sim}/sim-azure")

    async def three_calls() -> list[PartnerResponse]:
        pool = HttpPool(4)
        try:
            adapter = adapter_for(config, pool)
            return [await adapter.call(CallRequest(messages=CONVERSATION)) for _ in range(3)]
        finally:
            await pool.aclose()

    results = asyncio.run(three_calls())
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert (stats(sim, "sim-azure")["chunked"], stats(sim, "sim-azure")["closed"]) == (3, 3)


# --- Gemini: the request -----------------------------------------------------------------------------


def test_gemini_registry_entry() -> None:
    assert isinstance(build(gemini()), GeminiAdapter)


def test_gemini_url_and_key_header() -> None:
    adapter = build(gemini())
    assert adapter.endpoint() == (
        "https://generativelanguage.googleapis.com/v1beta/models/sim-gemini-flash:generateContent"
    )
    assert adapter.headers() == {"x-goog-api-key": "gemini-key"}
    prefixed = build(gemini(model="models/gemini-2.5-flash"))
    assert prefixed.endpoint().endswith("/v1beta/models/gemini-2.5-flash:generateContent")


def test_gemini_body_maps_roles_system_and_generation_config() -> None:
    body = build(gemini()).body(CallRequest(messages=CONVERSATION, max_tokens=77, temperature=0.4))
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hello?"}]},
            {"role": "model", "parts": [{"text": "Hi."}]},
            {"role": "user", "parts": [{"text": "Again."}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are terse.\n\nAnswer in English."}]},
        "generationConfig": {"maxOutputTokens": 77, "temperature": 0.4},
    }


def test_gemini_structured_output_sends_the_json_schema_as_it_is() -> None:
    body = build(gemini()).body(CallRequest(messages=CONVERSATION[1:2], output=VERDICT))
    assert "systemInstruction" not in body
    assert body["generationConfig"] == {
        "maxOutputTokens": 1024,
        "responseMimeType": "application/json",
        "responseJsonSchema": VERDICT.schema,
    }


# --- Gemini: reading answers -------------------------------------------------------------------------


def test_gemini_reads_text_parts_and_counts_thinking_as_output() -> None:
    answer = {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "pondering", "thought": True}, {"text": "forty"}, {"text": "-two"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "thoughtsTokenCount": 30},
    }
    result = build(gemini()).interpret(200, json.dumps(answer).encode(), httpx.Headers())
    assert (result.outcome, result.text) == (Outcome.OK, "forty-two")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 34)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}},
         "partner refused: prompt blocked (SAFETY)"),
        ({"candidates": [{"finishReason": "SAFETY", "index": 0}]},
         "partner refused: answer blocked (finishReason SAFETY)"),
    ],
    ids=["prompt-blocked", "candidate-blocked"],
)
def test_a_gemini_safety_block_is_fatal(answer: dict[str, Any], error: str) -> None:
    result = build(gemini()).interpret(200, json.dumps(answer).encode(), httpx.Headers())
    assert (result.outcome, result.error) == (Outcome.FATAL, error)


@pytest.mark.parametrize(
    "answer",
    [{"usageMetadata": {"promptTokenCount": 3}}, {"candidates": [{"finishReason": "OTHER", "index": 0}]}],
    ids=["no-candidates", "candidate-without-content"],
)
def test_a_gemini_answer_without_text_is_retryable(answer: dict[str, Any]) -> None:
    result = build(gemini()).interpret(200, json.dumps(answer).encode(), httpx.Headers())
    assert result.outcome is Outcome.RETRYABLE
    assert "unreadable response" in (result.error or "")


# --- Gemini: against the simulator -------------------------------------------------------------------


def test_gemini_call_reads_text_and_usage(sim: str) -> None:
    result = call(gemini(f"{sim}/sim-gemini"), CallRequest(messages=CONVERSATION, temperature=0.1))
    assert result.outcome is Outcome.OK, result.error
    assert result.text == "Simulated reply from sim-gemini: Again."
    reported = (result.raw or {})["usageMetadata"]
    assert result.usage.prompt_tokens == reported["promptTokenCount"] > 0
    assert result.usage.completion_tokens == reported["candidatesTokenCount"] > 0
    [sent] = received(sim, "sim-gemini")
    assert sent["generationConfig"] == {"maxOutputTokens": 1024, "temperature": 0.1}
    assert sum(stats(sim, "sim-gemini")["encodings"].values()) == 1


def test_gemini_api_version_is_configurable(sim: str) -> None:
    config = gemini(f"{sim}/sim-gemini", api_version="v1")
    assert build(config).endpoint() == f"{sim}/sim-gemini/v1/models/sim-gemini-flash:generateContent"
    assert call(config, CallRequest(messages=CONVERSATION)).outcome is Outcome.OK


def test_gemini_structured_output(sim: str) -> None:
    result = call(gemini(f"{sim}/sim-gemini"), CallRequest(messages=CONVERSATION, output=VERDICT))
    assert result.outcome is Outcome.OK
    assert json.loads(result.text or "") == {"label": "spam", "score": 1.0}


@pytest.mark.parametrize(
    ("overrides", "status", "message"),
    [
        ({"model": "gemini-ultra"}, 404, "models/gemini-ultra is not found"),
        ({"api_key": None}, 403, "unregistered callers"),
    ],
)
def test_gemini_misconfiguration_is_fatal_and_says_why(
    sim: str, overrides: dict[str, Any], status: int, message: str
) -> None:
    result = call(gemini(f"{sim}/sim-gemini", **overrides), CallRequest(messages=CONVERSATION))
    assert (result.outcome, result.status_code) == (Outcome.FATAL, status)
    assert message in (result.error or "")


def test_gemini_request_the_api_refuses_is_fatal(sim: str) -> None:
    result = call(gemini(f"{sim}/sim-gemini"), CallRequest(messages=CONVERSATION, extra={"max_tokens": 5}))
    assert (result.outcome, result.status_code) == (Outcome.FATAL, 400)
    assert 'Unknown name "max_tokens"' in (result.error or "")


@pytest.mark.parametrize(
    "behaviour",
    [
        {"error_rate": 1, "error_status": 503},
        {"error_rate": 1, "error_status": 429},
        {"html_502_rate": 1},
        {"chunked_rate": 1, "malformed_rate": 1},
    ],
    ids=["503-unavailable", "429-resource-exhausted", "html-502", "chunked-malformed"],
)
def test_gemini_partner_failures_are_retryable(sim: str, behaviour: dict[str, Any]) -> None:
    behave(sim, "sim-gemini", **behaviour)
    result = call(gemini(f"{sim}/sim-gemini"), CallRequest(messages=CONVERSATION))
    assert result.outcome is Outcome.RETRYABLE, result.error
