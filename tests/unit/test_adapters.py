"""Partner adapters: the wire requests they build and how they classify what comes back.

httpx.MockTransport stands in for the partner (not for any fedgate component)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from gateway_core.config import PartnerConfig
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters import adapter_for
from gateway_core.partners.adapters.anthropic import ANTHROPIC_VERSION, AnthropicMessagesAdapter
from gateway_core.partners.adapters.base import CallRequest, Outcome, PartnerAdapter, PartnerResponse, parse_retry_after
from gateway_core.partners.adapters.generic import GenericJSONAdapter
from gateway_core.partners.adapters.openai import OpenAIChatAdapter

CONVERSATION = [
    Message(role="system", content="You are terse."),
    Message(role="user", content="Hello?"),
    Message(role="assistant", content="Hi."),
    Message(role="user", content="Again."),
]

OPENAI_OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "openai says hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}
ANTHROPIC_OK = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": "anthropic "}, {"type": "text", "text": "says hi"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 13, "output_tokens": 5},
}
GENERIC_OK = {"output": "generic says hi", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}

KINDS: dict[str, tuple[type[PartnerAdapter], dict[str, Any], tuple[str, int, int]]] = {
    "openai": (OpenAIChatAdapter, OPENAI_OK, ("openai says hi", 11, 7)),
    "anthropic": (AnthropicMessagesAdapter, ANTHROPIC_OK, ("anthropic says hi", 13, 5)),
    "generic": (GenericJSONAdapter, GENERIC_OK, ("generic says hi", 3, 2)),
}


def partner(adapter: str, **overrides: Any) -> PartnerConfig:
    fields: dict[str, Any] = {
        "name": f"p-{adapter}",
        "adapter": adapter,
        "base_url": "https://partner.example/api",
        "model": "model-x",
        "api_key": "sk-test-123",
        "max_output_tokens": 321,
        "timeout_s": 7.5,
    }
    fields.update(overrides)
    return PartnerConfig.model_validate(fields)


class MockPool:
    """Stands in for HttpPool: every call goes through one client whose transport is the fake partner."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))

    def client(self) -> httpx.AsyncClient:
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()


def make_adapter(
    adapter: str, handler: Callable[[httpx.Request], httpx.Response] | None = None, **overrides: Any
) -> PartnerAdapter:
    pool = MockPool(handler or (lambda request: httpx.Response(500)))
    return adapter_for(partner(adapter, **overrides), pool)  # type: ignore[arg-type]


class Recorder:
    """A partner that records every request and answers with a canned response."""

    def __init__(self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status, self.body, self.headers = status, body, headers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return httpx.Response(self.status, content=content, headers=self.headers)


def call(adapter: PartnerAdapter, request: CallRequest) -> PartnerResponse:
    async def go() -> PartnerResponse:
        try:
            return await adapter.call(request)
        finally:
            await adapter.http.aclose()

    return asyncio.run(go())


# --- requests on the wire ---------------------------------------------------------------------------------------


def test_registry_maps_config_values_to_classes() -> None:
    for kind, (cls, _, _) in KINDS.items():
        assert type(make_adapter(kind)) is cls


def test_openai_request_on_the_wire() -> None:
    recorder = Recorder(body=OPENAI_OK)
    adapter = make_adapter("openai", recorder)
    result = call(adapter, CallRequest(messages=CONVERSATION, max_tokens=50, temperature=0.3))
    assert result.outcome is Outcome.OK
    (sent,) = recorder.requests
    assert sent.method == "POST"
    assert str(sent.url) == "https://partner.example/api/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-test-123"
    assert sent.headers["Content-Type"] == "application/json"
    body = json.loads(sent.content)
    assert body == {
        "model": "model-x",
        "messages": [{"role": m.role, "content": m.content} for m in CONVERSATION],  # system stays in messages
        "max_tokens": 50,
        "temperature": 0.3,
    }
    # the partner's own timeout is applied to the exchange
    assert sent.extensions["timeout"]["read"] == 7.5


def test_openai_defaults_max_tokens_and_omits_unset_temperature() -> None:
    body = make_adapter("openai").body(CallRequest(messages=CONVERSATION[1:2]))
    assert body["max_tokens"] == 321
    assert "temperature" not in body
    assert body["messages"] == [{"role": "user", "content": "Hello?"}]


def test_openai_without_key_sends_no_authorization() -> None:
    assert make_adapter("openai", api_key=None).headers() == {}


def test_api_key_from_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FG_TEST_PARTNER_KEY", "sk-from-env")
    adapter = make_adapter("openai", api_key_env="FG_TEST_PARTNER_KEY")
    assert adapter.headers()["authorization"] == "Bearer sk-from-env"


def test_anthropic_request_on_the_wire() -> None:
    recorder = Recorder(body=ANTHROPIC_OK)
    adapter = make_adapter("anthropic", recorder)
    two_systems = [Message(role="system", content="Rule two."), *CONVERSATION]
    result = call(adapter, CallRequest(messages=two_systems, temperature=1.7))
    assert result.outcome is Outcome.OK
    (sent,) = recorder.requests
    assert str(sent.url) == "https://partner.example/api/v1/messages"
    assert sent.headers["x-api-key"] == "sk-test-123"
    assert sent.headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert "authorization" not in sent.headers
    body = json.loads(sent.content)
    assert body["model"] == "model-x"
    assert body["system"] == "Rule two.\n\nYou are terse."  # lifted out of messages, in order
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert all(m["role"] != "system" for m in body["messages"])
    assert body["max_tokens"] == 321  # required by Anthropic: always present
    assert body["temperature"] == 1.0  # Anthropic's range is 0..1


def test_anthropic_without_system_sends_no_system_field() -> None:
    body = make_adapter("anthropic").body(CallRequest(messages=[Message(role="user", content="hi")], max_tokens=9))
    assert "system" not in body
    assert body["max_tokens"] == 9
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_generic_request_on_the_wire() -> None:
    recorder = Recorder(body=GENERIC_OK)
    adapter = make_adapter("generic", recorder, base_url="http://generic.example/infer")
    result = call(adapter, CallRequest(messages=CONVERSATION[1:2], extra={"top_k": 3}))
    assert result.outcome is Outcome.OK
    (sent,) = recorder.requests
    assert str(sent.url) == "http://generic.example/infer"
    assert sent.headers["authorization"] == "Bearer sk-test-123"
    assert json.loads(sent.content) == {
        "model": "model-x",
        "messages": [{"role": "user", "content": "Hello?"}],
        "max_tokens": 321,
        "top_k": 3,
    }


# --- interpret(): ok, usage from each format --------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_ok_reads_text_and_usage(kind: str) -> None:
    _, body, (text, prompt_tokens, completion_tokens) = KINDS[kind]
    result = make_adapter(kind).interpret(200, json.dumps(body).encode(), httpx.Headers())
    assert result.outcome is Outcome.OK
    assert result.status_code == 200
    assert result.text == text
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (prompt_tokens, completion_tokens)
    assert result.usage.total_tokens == prompt_tokens + completion_tokens
    assert result.error is None
    assert result.raw == body


def test_anthropic_output_tool_block_is_read_as_json() -> None:
    body = {**ANTHROPIC_OK, "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "t", "name": "emit_output", "input": {"x": 1}}]}
    result = make_adapter("anthropic").interpret(200, json.dumps(body).encode(), httpx.Headers())
    assert result.outcome is Outcome.OK
    assert json.loads(result.text or "") == {"x": 1}
    assert (result.finish_reason, result.tool_calls) == ("stop", None)  # the answer itself, not a call


def test_anthropic_other_tool_use_block_is_a_tool_call() -> None:
    body = {**ANTHROPIC_OK, "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}]}
    result = make_adapter("anthropic").interpret(200, json.dumps(body).encode(), httpx.Headers())
    assert result.outcome is Outcome.OK
    assert (result.text, result.finish_reason) == ("", "tool_calls")
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls or []] == [
        ("toolu_1", "f", {"x": 1})]


@pytest.mark.parametrize("kind", list(KINDS))
def test_ok_without_usage_reports_zero(kind: str) -> None:
    _, body, _ = KINDS[kind]
    body = {k: v for k, v in body.items() if k != "usage"}
    result = make_adapter(kind).interpret(200, json.dumps(body).encode(), httpx.Headers())
    assert result.outcome is Outcome.OK
    assert result.usage.total_tokens == 0


# --- interpret(): error classification --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(kind: str, status: int) -> None:
    body = json.dumps({"error": {"type": "x", "message": "try later"}}).encode()
    result = make_adapter(kind).interpret(status, body, httpx.Headers())
    assert result.outcome is Outcome.RETRYABLE
    assert result.status_code == status
    assert result.error == f"HTTP {status}: try later"
    assert result.text is None


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_fatal_statuses(kind: str, status: int) -> None:
    body = json.dumps({"error": {"message": "you did it wrong"}}).encode()
    result = make_adapter(kind).interpret(status, body, httpx.Headers())
    assert result.outcome is Outcome.FATAL
    assert result.error == f"HTTP {status}: you did it wrong"


def test_error_body_that_is_not_json_still_classifies() -> None:
    headers = httpx.Headers({"content-type": "text/html; charset=utf-8"})
    result = make_adapter("openai").interpret(502, b"<html>Bad Gateway</html>", headers)
    assert result.outcome is Outcome.RETRYABLE
    assert result.error == "HTTP 502: partner returned an error (text/html body)"


def test_string_error_field_is_used() -> None:
    result = make_adapter("generic").interpret(400, b'{"error": "no such model"}', httpx.Headers())
    assert (result.outcome, result.error) == (Outcome.FATAL, "HTTP 400: no such model")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'"a string"'])
def test_malformed_body_on_200_is_retryable_with_a_clear_error(kind: str, content: bytes) -> None:
    result = make_adapter(kind).interpret(200, content, httpx.Headers())
    assert result.outcome is Outcome.RETRYABLE
    assert result.status_code == 200
    assert result.error in ("malformed response body (not JSON)", "malformed response body (JSON but not an object)")


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("openai", {"choices": []}),
        ("openai", {"choices": [{"message": {"role": "assistant", "content": None}}]}),
        ("anthropic", {"type": "message"}),
        ("generic", {"output": 42}),
        ("generic", {"result": "x"}),
    ],
)
def test_off_format_json_on_200_is_retryable(kind: str, body: dict[str, Any]) -> None:
    result = make_adapter(kind).interpret(200, json.dumps(body).encode(), httpx.Headers())
    assert result.outcome is Outcome.RETRYABLE
    assert (result.error or "").startswith("unreadable response: ")


# --- Retry-After ---------------------------------------------------------------------------------------------------


def test_retry_after_seconds_is_read_on_429() -> None:
    result = make_adapter("openai").interpret(429, b"{}", httpx.Headers({"retry-after": "7"}))
    assert result.outcome is Outcome.RETRYABLE
    assert result.retry_after_s == 7.0


def test_retry_after_ms_is_read_and_wins_over_retry_after() -> None:
    headers = httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})
    result = make_adapter("openai").interpret(429, b"{}", headers)
    assert result.retry_after_s == 1.5


def test_no_retry_after_means_none() -> None:
    assert make_adapter("anthropic").interpret(529, b"{}", httpx.Headers()).retry_after_s is None


def test_retry_after_http_date_is_seconds_from_now() -> None:
    when = time.time() + 30
    waited = parse_retry_after(httpx.Headers({"Retry-After": formatdate(when, usegmt=True)}))
    assert waited is not None
    assert 28.0 <= waited <= 30.5  # HTTP dates have one-second resolution


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "abc", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({}, None),
    ],
)
def test_parse_retry_after_variants(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == expected


def test_retry_after_reaches_the_response_through_call() -> None:
    recorder = Recorder(429, {"error": {"message": "Rate limit reached"}}, {"retry-after-ms": "800"})
    result = call(make_adapter("openai", recorder), CallRequest(messages=CONVERSATION[1:2]))
    assert result.outcome is Outcome.RETRYABLE
    assert result.status_code == 429
    assert result.retry_after_s == 0.8
    assert result.error == "HTTP 429: Rate limit reached"


# --- call(): transport failures ----------------------------------------------------------------------------------


def raising(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("exc_type", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.WriteTimeout, httpx.PoolTimeout])
def test_timeout_is_retryable(kind: str, exc_type: type[httpx.TransportError]) -> None:
    result = call(make_adapter(kind, raising(exc_type)), CallRequest(messages=CONVERSATION[1:2]))
    assert result.outcome is Outcome.RETRYABLE
    assert result.status_code is None
    assert result.error == "timed out after 7.5s"


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError])
def test_connection_error_is_retryable(kind: str, exc_type: type[httpx.TransportError]) -> None:
    result = call(make_adapter(kind, raising(exc_type)), CallRequest(messages=CONVERSATION[1:2]))
    assert result.outcome is Outcome.RETRYABLE
    assert result.error == f"connection error: {exc_type.__name__} (simulated)"


def test_call_classifies_a_fatal_status() -> None:
    error = {"type": "authentication_error", "message": "invalid x-api-key"}
    recorder = Recorder(401, {"type": "error", "error": error})
    result = call(make_adapter("anthropic", recorder), CallRequest(messages=CONVERSATION[1:2]))
    assert result.outcome is Outcome.FATAL
    assert result.error == "HTTP 401: invalid x-api-key"
