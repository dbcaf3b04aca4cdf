"""Partner simulator: wire formats, injected faults, rate limiting, control plane, real-SDK round trip, and how
answers go on the wire (compression, chunked framing, closed connections, a load balancer's HTML 502) as seen by
real HTTP clients against the simulator served on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import brotli
import h11
import httpx
import openai
import pytest
import zstandard

from partner_simulator import PartnerBehaviour, SimulatedPartner, SimulatorConfig, create_app
from partner_simulator.app import minimal_instance
from partner_simulator.delivery import choose_encoding
from tests.simulator_process import running_simulator

OPENAI_HEADERS = {"authorization": "Bearer test-key"}
ANTHROPIC_HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(
    openai_behaviour: PartnerBehaviour | None = None,
    anthropic_behaviour: PartnerBehaviour | None = None,
    record_bodies: bool = False,
) -> SimulatorConfig:
    return SimulatorConfig(
        partners={
            "sim-openai": SimulatedPartner(
                kind="openai", model="sim-gpt", behaviour=openai_behaviour or PartnerBehaviour()
            ),
            "sim-anthropic": SimulatedPartner(
                kind="anthropic", model="sim-claude", behaviour=anthropic_behaviour or PartnerBehaviour()
            ),
        },
        record_bodies=record_bodies,
    )


@asynccontextmanager
async def simulator_client(
    config: SimulatorConfig | None = None, clock: FakeClock | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config or make_config(), clock=clock or time.monotonic)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        yield client


def chat_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "sim-gpt", "messages": [{"role": "user", "content": text}], **extra}


def messages_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "sim-claude", "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


async def chat(
    client: httpx.AsyncClient, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        "/sim-openai/v1/chat/completions",
        json=chat_body() if body is None else body,
        headers=OPENAI_HEADERS if headers is None else headers,
    )


async def message(
    client: httpx.AsyncClient, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        "/sim-anthropic/v1/messages",
        json=messages_body() if body is None else body,
        headers=ANTHROPIC_HEADERS if headers is None else headers,
    )


async def stats_of(client: httpx.AsyncClient, partner: str) -> dict[str, Any]:
    response = await client.get("/_sim/stats")
    stats: dict[str, Any] = response.json()["partners"][partner]
    return stats


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- OpenAI wire format ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_openai_reply_echoes_last_user_message_in_chat_completion_shape() -> None:
    body = chat_body()
    body["messages"] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "call <PERSON_1> now"}]},
    ]
    async with simulator_client() as client:
        response = await chat(client, body)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    reply = response.json()
    assert reply["id"].startswith("chatcmpl-")
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int)
    assert reply["model"] == "sim-gpt"
    assert reply["system_fingerprint"] == "fp_sim"
    assert reply["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Simulated reply from sim-openai: call <PERSON_1> now",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    prompt_chars = len("be brief") + len("first") + len("ok") + len("call <PERSON_1> now")
    completion_chars = len("Simulated reply from sim-openai: call <PERSON_1> now")
    assert reply["usage"] == {
        "prompt_tokens": prompt_chars // 4,
        "completion_tokens": completion_chars // 4,
        "total_tokens": prompt_chars // 4 + completion_chars // 4,
    }


@pytest.mark.anyio
async def test_openai_usage_is_at_least_one_token() -> None:
    async with simulator_client() as client:
        reply = (await chat(client, chat_body("x"))).json()
    assert reply["usage"]["prompt_tokens"] == 1


@pytest.mark.anyio
async def test_openai_json_object_mode_wraps_reply() -> None:
    async with simulator_client() as client:
        response = await chat(client, chat_body("ping", response_format={"type": "json_object"}))
    content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"reply": "Simulated reply from sim-openai: ping"}


@pytest.mark.anyio
async def test_openai_json_schema_mode_returns_minimal_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["spam", "ham"]},
            "score": {"type": "number"},
            "count": {"type": "integer"},
            "flagged": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "detail": {"type": "object", "properties": {"why": {"type": "string"}}, "required": ["why"]},
            "optional_note": {"type": "string"},
        },
        "required": ["label", "score", "count", "flagged", "tags", "detail"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
    async with simulator_client() as client:
        response = await chat(client, chat_body(response_format=response_format))
    content = json.loads(response.json()["choices"][0]["message"]["content"])
    assert content == {
        "label": "spam",
        "score": 1.0,
        "count": 1,
        "flagged": True,
        "tags": [],
        "detail": {"why": "sim"},
    }


def test_minimal_instance_follows_refs_and_prefers_non_null_alternatives() -> None:
    schema = {
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
        "type": "object",
        "properties": {
            "item": {"$ref": "#/$defs/Item"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "fixed": {"const": "v1"},
            "nullable": {"type": ["null", "integer"]},
            "pair": {"type": "array", "items": {"type": "boolean"}, "minItems": 2},
        },
        "required": ["item", "maybe", "fixed", "nullable", "pair"],
    }
    assert minimal_instance(schema) == {
        "item": {"n": 1},
        "maybe": "sim",
        "fixed": "v1",
        "nullable": 1,
        "pair": [True, True],
    }


@pytest.mark.anyio
async def test_openai_models_endpoint_lists_configured_model() -> None:
    async with simulator_client() as client:
        response = await client.get("/sim-openai/v1/models", headers=OPENAI_HEADERS)
    assert response.json() == {
        "object": "list",
        "data": [{"id": "sim-gpt", "object": "model", "created": 0, "owned_by": "fedgate-sim"}],
    }


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer "}, {"authorization": "Basic abc"}])
async def test_openai_rejects_missing_bearer_token(headers: dict[str, str]) -> None:
    async with simulator_client() as client:
        response = await chat(client, headers=headers)
        stats = await stats_of(client, "sim-openai")
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "authentication_error"
    assert error["param"] is None
    assert stats["errors"]["unauthorized"] == 1
    assert stats["requests"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"model": "sim-gpt"},
        {"model": "sim-gpt", "messages": []},
        {"model": "sim-gpt", "messages": "hi"},
        {"model": "sim-gpt", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
    ],
)
async def test_openai_invalid_body_is_bad_request(body: dict[str, Any]) -> None:
    async with simulator_client() as client:
        response = await chat(client, body)
        stats = await stats_of(client, "sim-openai")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert stats["errors"]["bad_request"] == 1


@pytest.mark.anyio
async def test_openai_non_json_body_is_bad_request() -> None:
    async with simulator_client() as client:
        response = await client.post("/sim-openai/v1/chat/completions", content=b"{", headers=OPENAI_HEADERS)
    assert response.status_code == 400


# --- Anthropic wire format -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_anthropic_reply_echoes_last_user_message_in_messages_shape() -> None:
    body = messages_body(system="be brief")
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "hola"}]}]
    async with simulator_client() as client:
        response = await message(client, body)

    reply = response.json()
    assert response.status_code == 200
    assert reply["id"].startswith("msg_")
    assert reply["type"] == "message"
    assert reply["role"] == "assistant"
    assert reply["model"] == "sim-claude"
    assert reply["content"] == [{"type": "text", "text": "Simulated reply from sim-anthropic: hola"}]
    assert reply["stop_reason"] == "end_turn"
    assert reply["stop_sequence"] is None
    assert reply["usage"] == {
        "input_tokens": max(1, (len("be brief") + len("hola")) // 4),
        "output_tokens": len("Simulated reply from sim-anthropic: hola") // 4,
    }


@pytest.mark.anyio
async def test_anthropic_forced_tool_returns_tool_use_block() -> None:
    tool = {
        "name": "record_verdict",
        "description": "Record the verdict",
        "input_schema": {
            "type": "object",
            "properties": {"verdict": {"type": "string"}, "confidence": {"type": "number"}},
            "required": ["verdict", "confidence"],
        },
    }
    body = messages_body(tools=[tool], tool_choice={"type": "tool", "name": "record_verdict"})
    async with simulator_client() as client:
        reply = (await message(client, body)).json()

    assert reply["stop_reason"] == "tool_use"
    [block] = reply["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert block["name"] == "record_verdict"
    assert block["input"] == {"verdict": "sim", "confidence": 1.0}


@pytest.mark.anyio
async def test_anthropic_tool_choice_naming_unknown_tool_is_bad_request() -> None:
    body = messages_body(tools=[], tool_choice={"type": "tool", "name": "missing"})
    async with simulator_client() as client:
        response = await message(client, body)
    assert response.status_code == 400


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status", "error_type", "kind"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error", "unauthorized"),
        ({"x-api-key": "", "anthropic-version": "2023-06-01"}, 401, "authentication_error", "unauthorized"),
        ({"x-api-key": "k"}, 400, "invalid_request_error", "bad_request"),
    ],
)
async def test_anthropic_requires_api_key_and_version(
    headers: dict[str, str], status: int, error_type: str, kind: str
) -> None:
    async with simulator_client() as client:
        response = await message(client, headers=headers)
        stats = await stats_of(client, "sim-anthropic")
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == error_type
    assert stats["errors"][kind] == 1


@pytest.mark.anyio
async def test_anthropic_takes_the_key_as_a_bearer_token_as_its_sdk_sends_it() -> None:
    async with simulator_client() as client:
        response = await message(client, headers={"authorization": "Bearer k", "anthropic-version": "2026-10-21"})
    assert response.status_code == 200


@pytest.mark.anyio
async def test_anthropic_requires_max_tokens() -> None:
    body = messages_body()
    del body["max_tokens"]
    async with simulator_client() as client:
        response = await message(client, body)
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


@pytest.mark.anyio
async def test_auth_can_be_disabled() -> None:
    config = make_config(anthropic_behaviour=PartnerBehaviour(require_api_key=False))
    async with simulator_client(config) as client:
        response = await message(client, headers={})
    assert response.status_code == 200


@pytest.mark.anyio
async def test_endpoint_of_the_other_wire_format_is_not_found() -> None:
    async with simulator_client() as client:
        wrong_kind = await client.post("/sim-anthropic/v1/chat/completions", json=chat_body())
        unknown = await client.post("/nobody/v1/chat/completions", json=chat_body())
    assert wrong_kind.status_code == 404
    assert unknown.status_code == 404


# --- injected faults -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "server_error"), (503, "server_error"), (400, "invalid_request_error"), (429, "rate_limit_error")],
)
async def test_openai_injected_errors_use_openai_error_shape(status: int, error_type: str) -> None:
    config = make_config(openai_behaviour=PartnerBehaviour(error_rate=1, error_status=status))
    async with simulator_client(config) as client:
        response = await chat(client)
        stats = await stats_of(client, "sim-openai")
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert stats["errors"][f"status_{status}"] == 1
    assert stats["ok"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error_type"),
    [(529, "overloaded_error"), (500, "api_error"), (401, "authentication_error"), (429, "rate_limit_error")],
)
async def test_anthropic_injected_errors_use_anthropic_error_shape(status: int, error_type: str) -> None:
    config = make_config(anthropic_behaviour=PartnerBehaviour(error_rate=1, error_status=status))
    async with simulator_client(config) as client:
        response = await message(client)
    assert response.status_code == status
    assert response.json() == {
        "type": "error",
        "error": {"type": error_type, "message": "Simulated partner failure."},
    }


@pytest.mark.anyio
async def test_malformed_reply_is_200_with_invalid_json() -> None:
    config = make_config(openai_behaviour=PartnerBehaviour(malformed_rate=1))
    async with simulator_client(config) as client:
        response = await chat(client)
        stats = await stats_of(client, "sim-openai")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert stats["errors"]["malformed"] == 1


@pytest.mark.anyio
async def test_offcontract_reply_is_valid_wire_with_prose_instead_of_json() -> None:
    behaviour = PartnerBehaviour(offcontract_rate=1)
    config = make_config(openai_behaviour=behaviour, anthropic_behaviour=behaviour)
    tool = {"name": "t", "input_schema": {"type": "object"}}
    async with simulator_client(config) as client:
        openai_reply = (await chat(client, chat_body(response_format={"type": "json_object"}))).json()
        anthropic_reply = (
            await message(client, messages_body(tools=[tool], tool_choice={"type": "tool", "name": "t"}))
        ).json()
        stats = await stats_of(client, "sim-openai")
    assert openai_reply["choices"][0]["message"]["content"] == "I cannot produce JSON right now."
    assert anthropic_reply["content"] == [{"type": "text", "text": "I cannot produce JSON right now."}]
    assert anthropic_reply["stop_reason"] == "end_turn"
    assert stats["errors"]["offcontract"] == 1


@pytest.mark.anyio
async def test_hang_answers_after_hang_and_counts_timeout() -> None:
    config = make_config(openai_behaviour=PartnerBehaviour(timeout_rate=1, hang_s=0.01))
    async with simulator_client(config) as client:
        response = await chat(client)
        stats = await stats_of(client, "sim-openai")
    assert response.status_code == 200
    assert stats["errors"]["timeout"] == 1
    assert stats["ok"] == 0


@pytest.mark.anyio
async def test_client_giving_up_on_a_hang_releases_in_flight() -> None:
    config = make_config(openai_behaviour=PartnerBehaviour(timeout_rate=1, hang_s=30))
    async with simulator_client(config) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(chat(client), timeout=0.05)
        stats = await stats_of(client, "sim-openai")
    assert stats["errors"]["timeout"] == 1
    assert stats["in_flight"] == 0
    assert stats["max_in_flight"] == 1


@pytest.mark.anyio
async def test_latency_delays_the_answer() -> None:
    config = make_config(openai_behaviour=PartnerBehaviour(latency_ms=30))
    async with simulator_client(config) as client:
        started = time.monotonic()
        response = await chat(client)
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.03


@pytest.mark.anyio
async def test_concurrent_requests_raise_max_in_flight() -> None:
    config = make_config(openai_behaviour=PartnerBehaviour(latency_ms=50))
    async with simulator_client(config) as client:
        responses = await asyncio.gather(*(chat(client) for _ in range(5)))
        stats = await stats_of(client, "sim-openai")
    assert [r.status_code for r in responses] == [200] * 5
    assert stats["max_in_flight"] == 5
    assert stats["in_flight"] == 0
    assert stats["requests"] == stats["ok"] == 5


async def _status_sequence(client: httpx.AsyncClient, count: int) -> list[int]:
    return [(await chat(client)).status_code for _ in range(count)]


@pytest.mark.anyio
async def test_seeded_faults_are_deterministic_and_replay_after_reset() -> None:
    config = make_config(openai_behaviour=PartnerBehaviour(error_rate=0.5, seed=7))
    async with simulator_client(config) as first, simulator_client(config) as second:
        first_run = await _status_sequence(first, 30)
        assert await _status_sequence(second, 30) == first_run
        await first.post("/_sim/reset")
        assert await _status_sequence(first, 30) == first_run
    assert {200, 500} == set(first_run)


# --- rate limiting ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_openai_rate_limit_answers_429_with_retry_headers() -> None:
    clock = FakeClock()
    config = make_config(openai_behaviour=PartnerBehaviour(rate_limiter="sliding_window", requests_per_minute=2))
    async with simulator_client(config, clock) as client:
        first = await chat(client)
        clock.advance(20.5)
        second = await chat(client)
        limited = await chat(client)
        stats = await stats_of(client, "sim-openai")

    assert (first.status_code, second.status_code, limited.status_code) == (200, 200, 429)
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "40"
    assert limited.headers["retry-after-ms"] == "39500"
    assert stats["rate_limited"] == stats["over_limit"] == 1
    assert stats["requests"] == 3
    assert stats["ok"] == 2


@pytest.mark.anyio
async def test_rate_limit_window_slides() -> None:
    clock = FakeClock()
    config = make_config(anthropic_behaviour=PartnerBehaviour(rate_limiter="sliding_window", requests_per_minute=1))
    async with simulator_client(config, clock) as client:
        assert (await message(client)).status_code == 200
        clock.advance(59.9)
        limited = await message(client)
        clock.advance(0.1)
        accepted_again = await message(client)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert "retry-after-ms" not in limited.headers
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert accepted_again.status_code == 200


@pytest.mark.anyio
async def test_rejected_requests_do_not_consume_the_window() -> None:
    clock = FakeClock()
    config = make_config(openai_behaviour=PartnerBehaviour(rate_limiter="sliding_window", requests_per_minute=1))
    async with simulator_client(config, clock) as client:
        assert (await chat(client, headers={})).status_code == 401
        assert (await chat(client)).status_code == 200
        assert (await chat(client)).status_code == 429
        assert (await chat(client)).status_code == 429
        stats = await stats_of(client, "sim-openai")
    assert stats["over_limit"] == 2


@pytest.mark.anyio
async def test_rate_limit_is_checked_before_injected_errors() -> None:
    clock = FakeClock()
    config = make_config(
        openai_behaviour=PartnerBehaviour(rate_limiter="sliding_window", requests_per_minute=1, error_rate=1)
    )
    async with simulator_client(config, clock) as client:
        statuses = await _status_sequence(client, 2)
    assert statuses == [500, 429]


@pytest.mark.anyio
async def test_fault_precedence_timeout_then_error_then_malformed_then_offcontract() -> None:
    async with simulator_client() as client:
        await client.put("/_sim/partners/sim-openai", json={"timeout_rate": 1, "hang_s": 0, "error_rate": 1})
        assert (await chat(client)).status_code == 200
        await client.put("/_sim/partners/sim-openai", json={"timeout_rate": 0, "malformed_rate": 1})
        assert (await chat(client)).status_code == 500
        await client.put("/_sim/partners/sim-openai", json={"error_rate": 0, "offcontract_rate": 1})
        malformed = await chat(client)
        stats = await stats_of(client, "sim-openai")
    assert malformed.content.startswith(b'{"id": "sim-malformed"')
    assert stats["errors"] == {
        "timeout": 1,
        "malformed": 1,
        "offcontract": 0,
        "unauthorized": 0,
        "bad_request": 0,
        "status_500": 1,
    }


# --- control plane ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_put_partner_applies_partial_update() -> None:
    async with simulator_client() as client:
        updated = await client.put("/_sim/partners/sim-openai", json={"error_rate": 1, "error_status": 503})
        again = await client.put("/_sim/partners/sim-openai", json={"latency_ms": 0})
        failing = await chat(client)
        partners = (await client.get("/_sim/partners")).json()["partners"]

    assert updated.status_code == 200
    assert updated.json()["error_rate"] == 1
    assert updated.json()["require_api_key"] is True
    assert again.json()["error_status"] == 503
    assert failing.status_code == 503
    assert partners["sim-openai"]["kind"] == "openai"
    assert partners["sim-openai"]["model"] == "sim-gpt"
    assert partners["sim-openai"]["behaviour"]["error_status"] == 503
    assert partners["sim-anthropic"]["behaviour"] == PartnerBehaviour().model_dump()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        ("/_sim/partners/nobody", {"error_rate": 1}, 404),
        ("/_sim/partners/sim-openai", {"error_rate": 2}, 422),
        ("/_sim/partners/sim-openai", {"no_such_knob": 1}, 422),
        ("/_sim/partners/sim-openai", [1, 2], 400),
    ],
)
async def test_put_partner_rejects_bad_updates(path: str, payload: Any, status: int) -> None:
    async with simulator_client() as client:
        response = await client.put(path, json=payload)
        behaviour = (await client.get("/_sim/partners")).json()["partners"]["sim-openai"]["behaviour"]
    assert response.status_code == status
    assert behaviour == PartnerBehaviour().model_dump()


@pytest.mark.anyio
async def test_reset_zeroes_counters_and_rate_windows() -> None:
    clock = FakeClock()
    config = make_config(openai_behaviour=PartnerBehaviour(rate_limiter="sliding_window", requests_per_minute=1))
    async with simulator_client(config, clock) as client:
        await _status_sequence(client, 2)
        reset = await client.post("/_sim/reset")
        stats = await stats_of(client, "sim-openai")
        after_reset = await chat(client)
    assert reset.json() == {"ok": True}
    assert stats == {
        "requests": 0,
        "ok": 0,
        "rate_limited": 0,
        "over_limit": 0,
        "errors": {"timeout": 0, "malformed": 0, "offcontract": 0, "unauthorized": 0, "bad_request": 0},
        "in_flight": 0,
        "max_in_flight": 0,
        "encodings": {},
        "chunked": 0,
        "closed": 0,
        "streams": 0,
        "streams_open": 0,
        "streams_cut": 0,
    }
    assert after_reset.status_code == 200


@pytest.mark.anyio
async def test_recording_keeps_raw_bodies_until_reset() -> None:
    async with simulator_client(make_config(record_bodies=True)) as client:
        await chat(client, chat_body("secret alice@example.com"))
        recorded = (await client.get("/_sim/requests/sim-openai")).json()
        await client.post("/_sim/reset")
        cleared = (await client.get("/_sim/requests/sim-openai")).json()
        unknown = await client.get("/_sim/requests/nobody")
    assert recorded["recording"] is True
    [body] = recorded["bodies"]
    assert "secret alice@example.com" in body
    assert cleared["bodies"] == []
    assert unknown.status_code == 404


@pytest.mark.anyio
async def test_recording_is_off_by_default() -> None:
    async with simulator_client() as client:
        await chat(client)
        recorded = (await client.get("/_sim/requests/sim-openai")).json()
    assert recorded == {"partner": "sim-openai", "recording": False, "bodies": []}


@pytest.mark.anyio
async def test_healthz() -> None:
    async with simulator_client() as client:
        response = await client.get("/healthz")
    assert response.json() == {"ok": True}


# --- configuration ---------------------------------------------------------------------------------


def test_demo_config_has_one_partner_per_wire_format() -> None:
    partners = SimulatorConfig.demo().partners
    assert {name: (p.kind, p.model) for name, p in partners.items()} == {
        "sim-openai": ("openai", "sim-gpt"),
        "sim-anthropic": ("anthropic", "sim-claude"),
        "sim-azure": ("azure_openai", "sim-gpt-deployment"),
        "sim-gemini": ("gemini", "sim-gemini-flash"),
    }


def test_from_env_reads_json_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "sim.json"
    config_file.write_text(json.dumps({"partners": {"acme": {"kind": "anthropic", "behaviour": {"error_rate": 0.25}}}}))
    monkeypatch.setenv("FEDGATE_SIM_CONFIG", str(config_file))
    config = SimulatorConfig.from_env()
    assert config.partners["acme"].behaviour.error_rate == 0.25
    assert config.partners["acme"].model == "sim-model"


def test_from_env_defaults_to_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_SIM_CONFIG", raising=False)
    assert SimulatorConfig.from_env() == SimulatorConfig.demo()


@pytest.mark.parametrize("name", ["_sim", "healthz", "a/b", ""])
def test_partner_names_must_fit_in_a_path_segment(name: str) -> None:
    with pytest.raises(ValueError, match="path prefix"):
        SimulatorConfig(partners={name: SimulatedPartner(kind="openai")})


# --- real server + official SDK --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_simulator() -> Iterator[str]:
    with running_simulator(SimulatorConfig.demo()) as base_url:
        yield base_url


@pytest.fixture
def live_simulator(served_simulator: str) -> Iterator[str]:
    yield served_simulator
    httpx.put(f"{served_simulator}/_sim/partners/sim-openai", json=PartnerBehaviour().model_dump())
    httpx.post(f"{served_simulator}/_sim/reset")


def _sdk_client(base_url: str, timeout: float = 10) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/sim-openai/v1", api_key="x", max_retries=0, timeout=timeout)


def test_openai_sdk_round_trip(live_simulator: str) -> None:
    client = _sdk_client(live_simulator)
    completion = client.chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": "ping from the SDK"}]
    )
    assert completion.choices[0].message.content == "Simulated reply from sim-openai: ping from the SDK"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert [model.id for model in client.models.list()] == ["sim-gpt"]


def test_openai_sdk_sees_rate_limit_error(live_simulator: str) -> None:
    httpx.put(
        f"{live_simulator}/_sim/partners/sim-openai", json={"requests_per_minute": 1, "rate_limiter": "sliding_window"}
    )
    client = _sdk_client(live_simulator)
    client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "two"}])
    assert int(raised.value.response.headers["retry-after"]) >= 1


def test_sdk_timeout_on_hang_releases_server_side_in_flight(live_simulator: str) -> None:
    httpx.put(f"{live_simulator}/_sim/partners/sim-openai", json={"timeout_rate": 1, "hang_s": 60})
    with pytest.raises(openai.APITimeoutError):
        _sdk_client(live_simulator, timeout=0.3).chat.completions.create(
            model="sim-gpt", messages=[{"role": "user", "content": "hang"}]
        )
    deadline = time.monotonic() + 5
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = httpx.get(f"{live_simulator}/_sim/stats").json()["partners"]["sim-openai"]
        if stats["in_flight"] == 0:
            break
    assert stats["in_flight"] == 0
    assert stats["errors"]["timeout"] == 1


@pytest.mark.anyio
async def test_token_bucket_allows_a_burst_then_paces_at_the_limit() -> None:
    clock = FakeClock()
    config = make_config(openai_behaviour=PartnerBehaviour(requests_per_minute=60, burst_s=2))
    async with simulator_client(config, clock) as client:
        burst = [(await chat(client)).status_code for _ in range(3)]
        clock.advance(1.0)
        refilled = (await chat(client)).status_code
        limited = await chat(client)
    assert burst == [200, 200, 429]
    assert refilled == 200
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"


# --- Azure OpenAI wire format ----------------------------------------------------------------------

AZURE_PATH = "/sim-azure/openai/deployments/sim-gpt-deployment/chat/completions"
AZURE_HEADERS = {"api-key": "test-key"}
GEMINI_PATH = "/sim-gemini/v1beta/models/sim-gemini-flash:generateContent"
GEMINI_HEADERS = {"x-goog-api-key": "test-key"}


def demo_client(clock: FakeClock | None = None) -> Any:
    return simulator_client(SimulatorConfig.demo(), clock)


async def azure_chat(
    client: httpx.AsyncClient,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    path: str = AZURE_PATH,
    api_version: str | None = "2024-10-21",
) -> httpx.Response:
    payload = {"messages": [{"role": "user", "content": "hello azure"}]} if body is None else body
    params = {"api-version": api_version} if api_version else {}
    return await client.post(path, json=payload, params=params, headers=AZURE_HEADERS if headers is None else headers)


@pytest.mark.anyio
async def test_azure_answers_openai_shape_with_content_filter_results() -> None:
    async with demo_client() as client:
        response = await azure_chat(client)
    assert response.status_code == 200
    reply = response.json()
    assert reply["object"] == "chat.completion"
    assert reply["model"] == "sim-gpt-deployment"
    [choice] = reply["choices"]
    assert choice["message"]["content"] == "Simulated reply from sim-azure: hello azure"
    assert choice["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    assert reply["prompt_filter_results"][0]["prompt_index"] == 0


@pytest.mark.anyio
async def test_azure_accepts_an_entra_id_bearer_token_instead_of_api_key() -> None:
    async with demo_client() as client:
        response = await azure_chat(client, headers={"authorization": "Bearer eyJ0eXAi"})
    assert response.status_code == 200


@pytest.mark.anyio
async def test_azure_structured_output_follows_response_format() -> None:
    schema = {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}},
    }
    async with demo_client() as client:
        response = await azure_chat(client, body)
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"label": "a"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "api_version", "headers", "status", "code"),
    [
        (AZURE_PATH, None, AZURE_HEADERS, 404, "404"),
        (AZURE_PATH, "latest", AZURE_HEADERS, 404, "404"),
        ("/sim-azure/openai/deployments/gpt-4o/chat/completions", "2024-10-21", AZURE_HEADERS, 404,
         "DeploymentNotFound"),
        (AZURE_PATH, "2024-10-21", {}, 401, "401"),
    ],
)
async def test_azure_gateway_errors_use_azure_shape(
    path: str, api_version: str | None, headers: dict[str, str], status: int, code: str
) -> None:
    async with demo_client() as client:
        response = await azure_chat(client, path=path, api_version=api_version, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == code


@pytest.mark.anyio
async def test_azure_invalid_body_is_an_openai_shaped_400() -> None:
    async with demo_client() as client:
        response = await azure_chat(client, {"messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.anyio
async def test_azure_throttle_says_when_to_retry_in_headers() -> None:
    clock = FakeClock()
    async with demo_client(clock) as client:
        await client.put("/_sim/partners/sim-azure", json={"requests_per_minute": 1, "rate_limiter": "sliding_window"})
        assert (await azure_chat(client)).status_code == 200
        limited = await azure_chat(client)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "429"
    assert "Please retry after 60 seconds" in limited.json()["error"]["message"]
    assert limited.headers["retry-after"] == "60"
    assert limited.headers["retry-after-ms"] == "60000"


# --- Gemini wire format ----------------------------------------------------------------------------


def gemini_body(text: str = "hello gemini", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


async def generate(
    client: httpx.AsyncClient,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    path: str = GEMINI_PATH,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        path, json=gemini_body() if body is None else body, headers=GEMINI_HEADERS if headers is None else headers,
        params=params or {},
    )


@pytest.mark.anyio
async def test_gemini_reply_has_candidates_and_usage_metadata() -> None:
    body = gemini_body(
        systemInstruction={"parts": [{"text": "be brief"}]},
        generationConfig={"maxOutputTokens": 64, "temperature": 0.2},
    )
    body["contents"] = [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "ok"}]},
        {"role": "user", "parts": [{"text": "call <PERSON_1>"}]},
    ]
    async with demo_client() as client:
        response = await generate(client, body)
    assert response.status_code == 200
    reply = response.json()
    text = "Simulated reply from sim-gemini: call <PERSON_1>"
    assert reply["candidates"] == [
        {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}
    ]
    prompt_tokens = (len("be brief") + len("first") + len("ok") + len("call <PERSON_1>")) // 4
    usage = reply["usageMetadata"]
    assert usage["promptTokenCount"] == prompt_tokens
    assert usage["candidatesTokenCount"] == len(text) // 4
    assert usage["totalTokenCount"] == prompt_tokens + len(text) // 4
    assert reply["modelVersion"] == "sim-gemini-flash"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "generation_config",
    [
        {"responseMimeType": "application/json", "responseJsonSchema": {
            "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
        {"responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}},
        {"response_mime_type": "application/json", "response_json_schema": {
            "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
    ],
)
async def test_gemini_structured_output_is_a_minimal_instance(generation_config: dict[str, Any]) -> None:
    async with demo_client() as client:
        response = await generate(client, gemini_body(generationConfig=generation_config))
    text = response.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"n": 1}


@pytest.mark.anyio
async def test_gemini_accepts_the_key_as_a_query_parameter() -> None:
    async with demo_client() as client:
        response = await generate(client, headers={}, params={"key": "test-key"})
    assert response.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "headers", "path", "status", "rpc_status"),
    [
        (gemini_body(), {}, GEMINI_PATH, 403, "PERMISSION_DENIED"),
        (gemini_body(), GEMINI_HEADERS, "/sim-gemini/v1beta/models/gemini-pro:generateContent", 404, "NOT_FOUND"),
        (gemini_body(messages=[]), GEMINI_HEADERS, GEMINI_PATH, 400, "INVALID_ARGUMENT"),
        (gemini_body(generationConfig={"max_tokens": 5}), GEMINI_HEADERS, GEMINI_PATH, 400, "INVALID_ARGUMENT"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, GEMINI_HEADERS, GEMINI_PATH, 400,
         "INVALID_ARGUMENT"),
        ({"contents": []}, GEMINI_HEADERS, GEMINI_PATH, 400, "INVALID_ARGUMENT"),
        (gemini_body(generationConfig={"responseSchema": {"type": "OBJECT"}}), GEMINI_HEADERS, GEMINI_PATH, 400,
         "INVALID_ARGUMENT"),
    ],
)
async def test_gemini_errors_are_google_rpc_statuses(
    body: dict[str, Any], headers: dict[str, str], path: str, status: int, rpc_status: str
) -> None:
    async with demo_client() as client:
        response = await generate(client, body, headers, path)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (status, rpc_status)
    assert isinstance(error["message"], str)


@pytest.mark.anyio
async def test_gemini_unknown_field_is_named_in_the_400() -> None:
    async with demo_client() as client:
        response = await generate(client, gemini_body(messages=[]))
    assert 'Unknown name "messages"' in response.json()["error"]["message"]


@pytest.mark.anyio
async def test_gemini_throttle_says_when_to_retry_in_the_body_not_a_header() -> None:
    clock = FakeClock()
    async with demo_client(clock) as client:
        await client.put("/_sim/partners/sim-gemini", json={"requests_per_minute": 1, "rate_limiter": "sliding_window"})
        assert (await generate(client)).status_code == 200
        limited = await generate(client)
        await client.put("/_sim/partners/sim-gemini", json={"requests_per_minute": None, "error_rate": 1,
                                                            "error_status": 503})
        overloaded = await generate(client)
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "60s"}]
    assert "retry-after" not in limited.headers
    assert overloaded.json()["error"]["status"] == "UNAVAILABLE"


@pytest.mark.anyio
async def test_gemini_lists_its_model() -> None:
    async with demo_client() as client:
        response = await client.get("/sim-gemini/v1beta/models", headers=GEMINI_HEADERS)
    [model] = response.json()["models"]
    assert model["name"] == "models/sim-gemini-flash"
    assert "generateContent" in model["supportedGenerationMethods"]


@pytest.mark.anyio
async def test_routes_of_other_kinds_are_not_found() -> None:
    async with demo_client() as client:
        azure_on_openai = await client.post(
            "/sim-openai/openai/deployments/sim-gpt/chat/completions?api-version=2024-10-21", json={}
        )
        gemini_on_anthropic = await client.post("/sim-anthropic/v1beta/models/sim-claude:generateContent", json={})
        openai_on_gemini = await client.post("/sim-gemini/v1/chat/completions", json=chat_body())
        models_on_azure = await client.get("/sim-azure/v1beta/models")
    assert [r.status_code for r in (azure_on_openai, gemini_on_anthropic, openai_on_gemini, models_on_azure)] == [
        404
    ] * 4


# --- on the wire: content negotiation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "chosen"),
    [
        ("gzip, deflate, br, zstd", "br"),  # what httpx and aiohttp send with brotli and zstandard installed
        ("gzip, deflate", "gzip"),  # ... and without them
        ("deflate", "deflate"),
        ("zstd", "zstd"),
        ("GZIP", "gzip"),
        ("gzip;q=1.0, br;q=0.5", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("br;q=0.8, *;q=0.9", "zstd"),
        ("*", "br"),
        ("*;q=0", None),
        ("identity", None),
        ("compress", None),
        ("", None),
        (None, None),
    ],
)
def test_choose_encoding_ranks_client_weights_then_server_preference(
    accept_encoding: str | None, chosen: str | None
) -> None:
    assert choose_encoding(accept_encoding) == chosen


def test_compression_is_on_by_default_and_the_env_var_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_SIM_CONFIG", raising=False)
    monkeypatch.delenv("FEDGATE_SIM_COMPRESS", raising=False)
    assert SimulatorConfig.from_env().compress is True
    for word, expected in (("0", False), ("off", False), ("FALSE", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("FEDGATE_SIM_COMPRESS", word)
        assert SimulatorConfig.from_env().compress is expected
    monkeypatch.setenv("FEDGATE_SIM_COMPRESS", "sometimes")
    with pytest.raises(ValueError, match="FEDGATE_SIM_COMPRESS"):
        SimulatorConfig.from_env()


def test_env_var_overrides_the_config_files_compress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "sim.json"
    config_file.write_text(json.dumps({"partners": {"acme": {"kind": "openai"}}, "compress": False}))
    monkeypatch.setenv("FEDGATE_SIM_CONFIG", str(config_file))
    monkeypatch.delenv("FEDGATE_SIM_COMPRESS", raising=False)
    assert SimulatorConfig.from_env().compress is False
    monkeypatch.setenv("FEDGATE_SIM_COMPRESS", "1")
    assert SimulatorConfig.from_env().compress is True


# --- on the wire: a real server on loopback, real clients ------------------------------------------

DECOMPRESS = {
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


@pytest.fixture
def wire_sim(served_simulator: str) -> Iterator[str]:
    """The served demo simulator; every partner's behaviour and the simulator's settings restored afterwards."""
    yield served_simulator
    for name in ("sim-openai", "sim-anthropic", "sim-azure", "sim-gemini"):
        httpx.put(f"{served_simulator}/_sim/partners/{name}", json=PartnerBehaviour().model_dump())
    httpx.put(f"{served_simulator}/_sim/settings", json={"compress": True})
    httpx.post(f"{served_simulator}/_sim/reset")


def sim_stats(base_url: str, partner: str = "sim-openai") -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{base_url}/_sim/stats").json()["partners"][partner]
    return stats


def set_behaviour(base_url: str, partner: str = "sim-openai", **changes: Any) -> None:
    assert httpx.put(f"{base_url}/_sim/partners/{partner}", json=changes).status_code == 200


@dataclass
class RawExchange:
    """One request/response on a raw socket, parsed by h11 (an HTTP/1.1 parser that is not the server's)."""

    status: int
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    chunked_pieces: int = 0
    server_closed: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def _exchange(client: h11.Connection, sock: socket.socket, path: str, netloc: str, payload: bytes,
              headers: dict[str, str]) -> RawExchange:
    request_headers = [("host", netloc), ("content-type", "application/json"),
                       ("content-length", str(len(payload))), *headers.items()]
    sock.sendall(client.send(h11.Request(method="POST", target=path, headers=request_headers)))
    sock.sendall(client.send(h11.Data(data=payload)))
    sock.sendall(client.send(h11.EndOfMessage()))
    exchange: RawExchange | None = None
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            exchange = RawExchange(event.status_code, {k.decode(): v.decode() for k, v in event.headers})
        elif isinstance(event, h11.Data):
            assert exchange is not None
            exchange.chunks.append(bytes(event.data))
            exchange.chunked_pieces += int(event.chunk_end)
        elif isinstance(event, h11.EndOfMessage):
            assert exchange is not None
            return exchange


def raw_post(
    base_url: str, path: str, body: dict[str, Any], headers: dict[str, str], probe_reuse: bool = False
) -> RawExchange:
    """POST on a fresh connection, parsed by h11. With `probe_reuse`, then find out whether the server closed the
    connection (the socket reads EOF) or keeps it alive (a second request on it is answered)."""
    url = urlsplit(base_url)
    payload = json.dumps(body).encode()
    client = h11.Connection(our_role=h11.CLIENT)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        exchange = _exchange(client, sock, path, url.netloc, payload, headers)
        if probe_reuse:
            if client.their_state is h11.MUST_CLOSE:
                exchange.server_closed = sock.recv(1) == b""
            else:
                client.start_next_cycle()
                exchange.server_closed = _exchange(client, sock, path, url.netloc, payload, headers).status != 200
        return exchange


OPENAI_PATH = "/sim-openai/v1/chat/completions"


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip", "deflate"])
def test_answer_bytes_on_the_wire_are_compressed_with_the_accepted_coding(wire_sim: str, encoding: str) -> None:
    exchange = raw_post(wire_sim, OPENAI_PATH, chat_body("squeeze me"), {**OPENAI_HEADERS, "accept-encoding": encoding})
    assert exchange.status == 200
    assert exchange.headers["content-encoding"] == encoding
    assert exchange.headers["vary"] == "accept-encoding"
    assert int(exchange.headers["content-length"]) == len(exchange.body)
    reply = json.loads(DECOMPRESS[encoding](exchange.body))
    assert reply["choices"][0]["message"]["content"] == "Simulated reply from sim-openai: squeeze me"
    assert sim_stats(wire_sim)["encodings"] == {encoding: 1}


def test_no_accept_encoding_gets_identity(wire_sim: str) -> None:
    exchange = raw_post(wire_sim, OPENAI_PATH, chat_body(), OPENAI_HEADERS)
    assert "content-encoding" not in exchange.headers
    assert json.loads(exchange.body)["object"] == "chat.completion"


def test_compression_can_be_switched_off_at_run_time(wire_sim: str) -> None:
    assert httpx.get(f"{wire_sim}/_sim/settings").json() == {"compress": True}
    switched = httpx.put(f"{wire_sim}/_sim/settings", json={"compress": False})
    exchange = raw_post(wire_sim, OPENAI_PATH, chat_body(), {**OPENAI_HEADERS, "accept-encoding": "gzip, br"})
    refused = httpx.put(f"{wire_sim}/_sim/settings", json={"compress": False, "level": 9})
    assert switched.json() == {"compress": False}
    assert "content-encoding" not in exchange.headers
    assert json.loads(exchange.body)["object"] == "chat.completion"
    assert refused.status_code == 422
    assert sim_stats(wire_sim)["encodings"] == {}


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (OPENAI_PATH, chat_body(), OPENAI_HEADERS),
        ("/sim-anthropic/v1/messages", messages_body(), ANTHROPIC_HEADERS),
        (f"{AZURE_PATH}?api-version=2024-10-21", {"messages": [{"role": "user", "content": "x"}]}, AZURE_HEADERS),
        (GEMINI_PATH, gemini_body(), GEMINI_HEADERS),
    ],
)
def test_httpx_reads_every_route_compressed_with_its_default_accept_encoding(
    wire_sim: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=wire_sim) as client:
        offered = client.headers["accept-encoding"]
        response = client.post(path, json=body, headers=headers)
    assert offered == "gzip, deflate, br, zstd"
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "br"
    assert isinstance(response.json(), dict)


@pytest.mark.anyio
async def test_aiohttp_reads_compressed_chunked_answers(wire_sim: str) -> None:
    set_behaviour(wire_sim, chunked_rate=1)
    async with aiohttp.ClientSession() as session:
        for encoding in ("br", "zstd", "gzip", "deflate"):
            async with session.post(f"{wire_sim}{OPENAI_PATH}", json=chat_body(encoding),
                                    headers={**OPENAI_HEADERS, "accept-encoding": encoding}) as response:
                assert response.headers["content-encoding"] == encoding
                assert response.headers["transfer-encoding"] == "chunked"
                reply = await response.json()
            assert reply["choices"][0]["message"]["content"] == f"Simulated reply from sim-openai: {encoding}"


def test_chunked_answers_come_in_pieces_without_content_length(wire_sim: str) -> None:
    set_behaviour(wire_sim, chunked_rate=1)
    plain = raw_post(wire_sim, OPENAI_PATH, chat_body("in pieces"), OPENAI_HEADERS)
    compressed = raw_post(wire_sim, OPENAI_PATH, chat_body("in pieces"), {**OPENAI_HEADERS, "accept-encoding": "gzip"})
    for exchange in (plain, compressed):
        assert exchange.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in exchange.headers
        assert exchange.chunked_pieces >= 2
    assert json.loads(plain.body)["choices"][0]["message"]["content"] == "Simulated reply from sim-openai: in pieces"
    assert json.loads(gzip.decompress(compressed.body))["object"] == "chat.completion"
    assert sim_stats(wire_sim)["chunked"] == 2


def test_a_partner_can_close_the_keep_alive_connection_after_its_answer(wire_sim: str) -> None:
    kept = raw_post(wire_sim, OPENAI_PATH, chat_body(), OPENAI_HEADERS, probe_reuse=True)
    set_behaviour(wire_sim, close_connection_rate=1)
    closed = raw_post(wire_sim, OPENAI_PATH, chat_body(), OPENAI_HEADERS, probe_reuse=True)
    with httpx.Client(base_url=wire_sim, headers=OPENAI_HEADERS) as client:
        again = [client.post(OPENAI_PATH, json=chat_body()).status_code for _ in range(3)]
    assert (kept.server_closed, "connection" in kept.headers) == (False, False)
    assert closed.server_closed is True
    assert closed.headers["connection"] == "close"
    assert json.loads(closed.body)["object"] == "chat.completion"
    assert again == [200, 200, 200]
    assert sim_stats(wire_sim)["closed"] == 4


def test_load_balancer_502_is_an_html_page(wire_sim: str) -> None:
    set_behaviour(wire_sim, html_502_rate=1)
    with httpx.Client(base_url=wire_sim) as client:
        response = client.post(OPENAI_PATH, json=chat_body(), headers=OPENAI_HEADERS)
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-encoding"] == "br"
    assert "<h1>502 Bad Gateway</h1>" in response.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert sim_stats(wire_sim)["errors"]["html_502"] == 1


def test_openai_sdk_sees_the_html_502_as_a_server_error(wire_sim: str) -> None:
    set_behaviour(wire_sim, html_502_rate=1)
    with pytest.raises(openai.InternalServerError) as raised:
        _sdk_client(wire_sim).chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 502
