"""Streamed answers, as each partner API streams them (server-sent events), for requests that ask for a stream.

- OpenAI and Azure OpenAI (`stream: true`): `chat.completion.chunk` events, the first carrying the role, one per
  piece of text, one with the finish reason, a usage chunk with empty `choices` when
  `stream_options.include_usage` is set, then `data: [DONE]`. A tool call: the first chunk's `delta.tool_calls`
  has its index, id, type and name (arguments ""), the next ones pieces of its arguments under the same index.
- Anthropic (`stream: true`): `message_start`, `content_block_start` (a `text` or a `tool_use` block), `ping`,
  `content_block_delta` per piece (`text_delta`, or `input_json_delta` for a tool's input), `content_block_stop`,
  `message_delta` (stop reason and output tokens), `message_stop`.
- Gemini (`:streamGenerateContent?alt=sse`): one GenerateContentResponse per piece, the last with `finishReason`
  and the usage, separated by CRLF pairs as Google's servers send them; a tool call is one `functionCall` part
  (Gemini does not stream a call's arguments).

The text is cut into pieces of `stream_chunk_chars` characters with `stream_token_delay_ms` between them (the
partner's behaviour controls); `stream_cut_after_chars` stops the stream there, without its end, like a partner
failing mid-answer. A client that goes away stops the stream (counted in the stats as `streams_cut`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from partner_simulator.answers import Completion, ParsedRequest, estimate_tokens, new_id
from partner_simulator.behaviour import PartnerBehaviour, PartnerKind, PartnerStats

Events = Iterator[tuple[bytes, int]]  # an event on the wire, and how many characters of the answer it carries


def stream_reply(kind: PartnerKind, parsed: ParsedRequest, completion: Completion, behaviour: PartnerBehaviour,
                 stats: PartnerStats) -> StreamingResponse:
    pieces = _pieces(completion.text, behaviour.stream_chunk_chars)
    if kind == "anthropic":
        events = _anthropic(parsed, completion, pieces)
    elif kind == "gemini":
        events = _gemini(parsed, completion, pieces)
    else:
        events = _openai(parsed, completion, pieces)
    body = _paced(events, behaviour, stats)
    return StreamingResponse(body, media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


async def _paced(events: Events, behaviour: PartnerBehaviour, stats: PartnerStats) -> AsyncIterator[bytes]:
    delay_s = behaviour.stream_token_delay_ms / 1000
    cut_after = behaviour.stream_cut_after_chars
    stats.streams += 1
    stats.streams_open += 1
    sent_chars, finished = 0, False
    try:
        for event, chars in events:
            if chars and cut_after is not None and sent_chars >= cut_after:
                stats.count_error("stream_cut")
                finished = True
                return
            if chars and sent_chars and delay_s > 0:
                await asyncio.sleep(delay_s)
            yield event
            sent_chars += chars
        finished = True
    finally:
        stats.streams_open -= 1
        if not finished:
            stats.streams_cut += 1


def _sse(data: Any, event: str | None = None, separator: bytes = b"\n") -> bytes:
    head = f"event: {event}".encode() + separator if event else b""
    return head + b"data: " + orjson.dumps(data) + separator + separator


# --- OpenAI / Azure OpenAI ---------------------------------------------------------------------------------------


def _openai(parsed: ParsedRequest, completion: Completion, pieces: list[str]) -> Events:
    common = {"id": f"chatcmpl-{new_id()}", "object": "chat.completion.chunk", "created": int(time.time()),
              "model": parsed.model, "system_fingerprint": "fp_sim"}
    extra: dict[str, Any] = {"usage": None} if parsed.include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse({**common, "choices": [choice], **extra})

    if completion.finish == "tool_calls" and completion.tool_name is not None:
        call = {"index": 0, "id": f"call_{new_id()}", "type": "function",
                "function": {"name": completion.tool_name, "arguments": ""}}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}), 0
        for piece in pieces:
            if piece:
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), len(piece)
    else:
        yield chunk({"role": "assistant", "content": "", "refusal": None}), 0
        for piece in pieces:
            if piece:
                yield chunk({"content": piece}), len(piece)
    yield chunk({}, completion.finish), 0
    if parsed.include_usage:
        prompt_tokens, completion_tokens = estimate_tokens(parsed.prompt_chars), estimate_tokens(len(completion.text))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        yield _sse({**common, "choices": [], "usage": usage}), 0
    yield b"data: [DONE]\n\n", 0


# --- Anthropic ---------------------------------------------------------------------------------------------------


def _anthropic(parsed: ParsedRequest, completion: Completion, pieces: list[str]) -> Events:
    input_tokens = estimate_tokens(parsed.prompt_chars)
    message: dict[str, Any] = {
        "id": f"msg_{new_id()}", "type": "message", "role": "assistant", "content": [], "model": parsed.model,
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    yield _sse({"type": "message_start", "message": message}, "message_start"), 0
    if completion.tool_name is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
        delta_type, delta_field = "text_delta", "text"
        stop_reason = "max_tokens" if completion.finish == "length" else (
            "stop_sequence" if completion.stop_sequence else "end_turn")
    else:
        block = {"type": "tool_use", "id": f"toolu_{new_id()}", "name": completion.tool_name, "input": {}}
        delta_type, delta_field, stop_reason = "input_json_delta", "partial_json", "tool_use"
    yield _sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start"), 0
    yield _sse({"type": "ping"}, "ping"), 0
    for piece in pieces:
        if piece:
            delta = {"type": delta_type, delta_field: piece}
            yield _sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"), len(piece)
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), 0
    usage = {"output_tokens": estimate_tokens(len(completion.text))}
    yield _sse({"type": "message_delta", "delta": {"stop_reason": stop_reason,
                                                   "stop_sequence": completion.stop_sequence},
                "usage": usage}, "message_delta"), 0
    yield _sse({"type": "message_stop"}, "message_stop"), 0


# --- Gemini ------------------------------------------------------------------------------------------------------


def _gemini(parsed: ParsedRequest, completion: Completion, pieces: list[str]) -> Events:
    prompt_tokens = estimate_tokens(parsed.prompt_chars)
    response_id = new_id()
    parts: list[list[dict[str, Any]]]
    if completion.finish == "tool_calls" and completion.tool_name is not None:
        call = {"name": completion.tool_name, "args": completion.tool_input}
        pieces, parts = [completion.text], [[{"functionCall": call}]]
    else:
        parts = [[{"text": piece}] for piece in pieces]
    sent = 0
    for number, (piece, content_parts) in enumerate(zip(pieces, parts, strict=True), start=1):
        sent += len(piece)
        last = number == len(pieces)
        candidate: dict[str, Any] = {"content": {"parts": content_parts, "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "MAX_TOKENS" if completion.finish == "length" else "STOP"
        candidates_tokens = estimate_tokens(sent)
        usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": candidates_tokens,
                 "totalTokenCount": prompt_tokens + candidates_tokens}
        data = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": parsed.model,
                "responseId": response_id}
        yield _sse(data, separator=b"\r\n"), len(piece)
