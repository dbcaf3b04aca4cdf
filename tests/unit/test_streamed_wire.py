"""Streamed partner answers at the socket level: the exact bytes a partner's server sends (chunked framing, events cut
at arbitrary byte boundaries across chunks, `ping` events, CRLF line ends, fields we do not know), served by the raw
asyncio HTTP server of tests/wire_servers.py, not by our simulator, and read by each adapter's streamed call. The
event sequences follow each partner's published stream format (OpenAI chat.completion.chunk with a usage chunk and
`[DONE]`; Anthropic's message events with a text block and a tool_use block; Gemini's streamGenerateContent SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from gateway_core.config import PartnerConfig
from gateway_core.jobs.chat_options import FunctionCall, ToolCall
from gateway_core.partners.adapters import adapter_for
from gateway_core.partners.adapters.base import HttpPool, Outcome
from gateway_core.partners.adapters.streamed import StreamedResponse, call_streamed
from tests import wire_servers as wire


def sse(events: Sequence[tuple[str | None, Any]], newline: str = "\n") -> bytes:
    out = ""
    for name, data in events:
        if name is not None:
            out += f"event: {name}{newline}"
        out += f"data: {data if isinstance(data, str) else json.dumps(data)}{newline}{newline}"
    return out.encode()


def streamed(body: bytes, piece: int) -> wire.Behaviour:
    """A 200 text/event-stream answer, chunked, cut every `piece` bytes wherever that falls (inside a line, a UTF-8
    character or the CRLF pair)."""

    async def respond(request: wire.Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(wire.head("200 OK", {"Content-Type": "text/event-stream; charset=utf-8",
                                          "Transfer-Encoding": "chunked", "Cache-Control": "no-cache"}))
        for start in range(0, len(body), piece):
            part = body[start:start + piece]
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return respond


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-w1", "object": "chat.completion.chunk", "created": 1, "model": "m-2024",
            "system_fingerprint": "fp_1", "service_tier": "default",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}


OPENAI_TEXT = sse([
    (None, chunk({"role": "assistant", "content": "", "refusal": None})),
    (None, chunk({"content": "Grüße"})),
    (None, chunk({"content": ", wire ✓"})),
    (None, chunk({}, "stop")),
    (None, {**chunk({}), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
    (None, "[DONE]"),
])

OPENAI_TOOL = sse([
    (None, chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]})),
    (None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"loc"}}]})),
    (None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": "ation\": \"Par"}}]})),
    (None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]})),
    (None, chunk({}, "tool_calls")),
    (None, "[DONE]"),
])


def anthropic_events(*blocks: list[dict[str, Any]], stop: str) -> bytes:
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": {
        "id": "msg_w1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 21, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1, "service_tier": "standard"}}})]
    events.append(("ping", {"type": "ping"}))
    for block in blocks:
        events += [(payload["type"], payload) for payload in block]
    events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                  "usage": {"output_tokens": 17}}),
               ("message_stop", {"type": "message_stop"})]
    return sse(events)


def text_block(index: int, *pieces: str) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            *({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}
              for p in pieces),
            {"type": "content_block_stop", "index": index}]


def tool_block(index: int, *json_pieces: str) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": "toolu_w1", "name": "get_weather", "caller": {"type": "direct"},
                "input": {}}},
            *({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta",
                                                                         "partial_json": p}} for p in json_pieces),
            {"type": "content_block_stop", "index": index}]


ANTHROPIC_TEXT = anthropic_events(text_block(0, "Grüße", ", wire ✓"), stop="end_turn")
ANTHROPIC_TOOL = anthropic_events(text_block(0, "I'll check."),
                                  tool_block(1, "", "{\"locati", "on\": \"P", "ar", "is\"}"), stop="tool_use")

GEMINI_TEXT = sse([
    (None, {"candidates": [{"content": {"parts": [{"text": "Grüße"}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1, "totalTokenCount": 10},
            "modelVersion": "gemini-x", "responseId": "r1"}),
    (None, {"candidates": [{"content": {"parts": [{"text": ", wire ✓"}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13},
            "modelVersion": "gemini-x", "responseId": "r1"}),
], newline="\r\n")

GEMINI_TOOL = sse([
    (None, {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather",
                                                                    "args": {"location": "Paris"}}}],
                                        "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 5, "totalTokenCount": 14}}),
], newline="\r\n")


def read(kind: str, body: bytes, piece: int) -> tuple[StreamedResponse, list[str]]:
    deltas: list[str] = []

    async def sink(text: str) -> None:
        deltas.append(text)

    async def go(url: str) -> StreamedResponse:
        base = f"{url}/v1beta" if kind == "gemini" else (url if kind == "anthropic" else f"{url}/v1")
        config = PartnerConfig(name="wire", adapter=kind, base_url=base, model="m", api_key="k", timeout_s=10)
        http = HttpPool(4)
        try:
            adapter = adapter_for(config, http)
            return await call_streamed(adapter, {"model": "m", "stream": True}, sink)
        finally:
            await http.aclose()

    with wire.wire_server(streamed(body, piece)) as server:
        return asyncio.run(go(server.url)), deltas


@pytest.mark.parametrize("piece", [1, 3, 7, 64, 4096])
@pytest.mark.parametrize(("kind", "body"), [("openai", OPENAI_TEXT), ("anthropic", ANTHROPIC_TEXT),
                                            ("gemini", GEMINI_TEXT)])
def test_text_streams_arrive_whole_however_the_bytes_are_cut(kind: str, body: bytes, piece: int) -> None:
    result, deltas = read(kind, body, piece)
    assert result.response.outcome is Outcome.OK, result.response.error
    assert "".join(deltas) == result.response.text == "Grüße, wire ✓"
    assert result.finish_reason == "stop" and result.response.usage.completion_tokens in (4, 17)


@pytest.mark.parametrize("piece", [1, 5, 4096])
@pytest.mark.parametrize(("kind", "body", "text"), [("openai", OPENAI_TOOL, ""),
                                                    ("anthropic", ANTHROPIC_TOOL, "I'll check."),
                                                    ("gemini", GEMINI_TOOL, "")])
def test_tool_calls_are_assembled_from_the_partners_fragments(kind: str, body: bytes, text: str,
                                                              piece: int) -> None:
    result, deltas = read(kind, body, piece)
    assert result.response.outcome is Outcome.OK, result.response.error
    assert "".join(deltas) == text and result.finish_reason == "tool_calls"
    (call,) = result.response.tool_calls or []
    assert call.function == FunctionCall(name="get_weather", arguments=call.function.arguments)
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    assert isinstance(call, ToolCall) and call.id


def test_a_stream_the_server_ends_before_its_last_event_is_retryable() -> None:
    result, deltas = read("anthropic", ANTHROPIC_TEXT[: ANTHROPIC_TEXT.index(b"event: message_delta")], 64)
    assert result.response.outcome is Outcome.RETRYABLE and "ended before" in (result.response.error or "")
    assert "".join(deltas) == "Grüße, wire ✓"  # what came went out; the run's failure then ends the client's stream
