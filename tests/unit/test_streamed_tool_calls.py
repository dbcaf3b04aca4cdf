"""Tool calls in streams (issue 16, items 1 and 2 together): each adapter assembles the calls from its partner's
stream events (not as text), the simulator streams them as each partner does (read by the official SDKs' stream
helpers), a streamed call ends with them, and the API writes them as OpenAI's chunks do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from cryptography.fernet import Fernet
from openai.types.chat import ChatCompletionChunk

from gateway_api.streaming import ChatChunks
from gateway_core.config import PartnerConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.jobs.chat_options import ChatOptions, FunctionCall, ToolCall
from gateway_core.jobs.chat_request import ChatCompletionRequest
from gateway_core.jobs.job_stream import JobStream
from gateway_core.jobs.models import JobStatus, Message, Usage
from gateway_core.jobs.store import JobRecord
from gateway_core.partners.adapters import adapter_for
from gateway_core.partners.adapters.base import (
    CallRequest,
    HttpPool,
    Outcome,
    PartnerAdapter,
    PartnerResponse,
    StreamProgress,
)
from gateway_core.partners.adapters.sse import SseEvent
from gateway_core.partners.adapters.streamed import StreamedResponse, call_streamed
from partner_simulator import PartnerBehaviour, SimulatorConfig
from tests.unit.test_streaming import PARTNERS, _decode, _Served
from workers.streaming import emit_whole, relay

SEND_EMAIL = {"type": "function", "function": {
    "name": "send_email", "description": "Send an email",
    "parameters": {"type": "object", "properties": {"body": {"type": "string"}}, "required": ["body"]}}}


def _adapter(kind: str) -> PartnerAdapter:
    config = PartnerConfig.model_validate({"name": f"p-{kind}", "adapter": kind, "base_url": "http://partner.invalid",
                                           "model": "m", "api_key": "k"})
    return adapter_for(config, HttpPool(1))


def _read(adapter: PartnerAdapter, events: list[tuple[str, dict[str, Any] | str]]) -> tuple[str, StreamProgress]:
    progress = StreamProgress()
    text = ""
    for name, data in events:
        text += adapter.read_stream_event(SseEvent(name, data if isinstance(data, str) else json.dumps(data)),
                                          progress)
    return text, progress


# --- each adapter assembles the calls ----------------------------------------------------------------------------


def _openai_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> tuple[str, dict[str, Any]]:
    return "message", {"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def test_openai_tool_call_fragments_are_assembled_by_index() -> None:
    events = [
        _openai_chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "send_email", "arguments": ""}}]}),
        _openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"body": "hi <EMAIL'}}]}),
        _openai_chunk({"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"q"'}}]}),
        _openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '_ADDRESS_1>"}'}}]}),
        _openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": ': 1}'}}]}),
        _openai_chunk({}, "tool_calls"),
        ("message", "[DONE]"),
    ]
    for kind in ("openai", "azure_openai"):
        text, progress = _read(_adapter(kind), events)
        assert text == ""
        assert progress.finish_reason == "tool_calls" and progress.ended
        assert progress.tool_calls.assembled() == [
            ToolCall(id="call_a", function=FunctionCall(name="send_email",
                                                        arguments='{"body": "hi <EMAIL_ADDRESS_1>"}')),
            ToolCall(id="call_b", function=FunctionCall(name="lookup", arguments='{"q": 1}')),
        ]


def test_openai_text_alone_has_no_tool_calls() -> None:
    text, progress = _read(_adapter("openai"), [_openai_chunk({"content": "hi"}), _openai_chunk({}, "stop")])
    assert (text, progress.finish_reason, progress.tool_calls.assembled()) == ("hi", "stop", None)


def _anthropic_event(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return str(payload["type"]), payload


def test_anthropic_tool_use_blocks_are_calls_and_text_stays_text() -> None:
    events = [_anthropic_event(e) for e in [
        {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sending."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "send_email", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"bo'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'dy": "x"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_2", "name": "ping", "input": {}}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]]
    text, progress = _read(_adapter("anthropic"), events)
    assert text == "Sending." and progress.finish_reason == "tool_calls" and progress.ended
    assert progress.tool_calls.assembled() == [
        ToolCall(id="toolu_1", function=FunctionCall(name="send_email", arguments='{"body": "x"}')),
        ToolCall(id="toolu_2", function=FunctionCall(name="ping", arguments="{}")),
    ]


def test_anthropics_forced_output_tool_stays_the_answers_text() -> None:
    events = [_anthropic_event(e) for e in [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "emit_output", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
    ]]
    text, progress = _read(_adapter("anthropic"), events)
    assert text == '{"a": 1}' and progress.tool_calls.assembled() is None


def _gemini_chunk(parts: list[dict[str, Any]], finish: str | None = None) -> tuple[str, dict[str, Any]]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return "message", {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}


def test_gemini_function_call_parts_are_calls_with_ids_made_up() -> None:
    events = [
        _gemini_chunk([{"text": "Let me send it."}]),
        _gemini_chunk([{"functionCall": {"name": "send_email", "args": {"body": "x"}}},
                       {"functionCall": {"id": "given-id", "name": "ping", "args": {}}}], "STOP"),
    ]
    text, progress = _read(_adapter("gemini"), events)
    assert text == "Let me send it." and progress.finish_reason == "tool_calls"
    first, second = progress.tool_calls.assembled() or []
    assert first.id.startswith("call_") and len(first.id) == 29
    assert (first.function.name, json.loads(first.function.arguments)) == ("send_email", {"body": "x"})
    assert (second.id, second.function.name, second.function.arguments) == ("given-id", "ping", "{}")


def test_gemini_max_tokens_stays_length_with_calls() -> None:
    _, progress = _read(_adapter("gemini"), [_gemini_chunk([{"functionCall": {"name": "ping"}}], "MAX_TOKENS")])
    assert progress.finish_reason == "length"


# --- the simulator's streamed tool calls, read by the official SDKs ----------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with _Served(SimulatorConfig.demo()) as server:
        yield server.url


@pytest.fixture()
def sim(served: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served, timeout=10) as client:
        for name in PARTNERS:
            client.put(f"/_sim/partners/{name}", json={**PartnerBehaviour().model_dump(), "stream_chunk_chars": 4})
        client.post("/_sim/reset")
        yield client


PROMPT = "mail <EMAIL_ADDRESS_1> the report"


def test_the_openai_sdk_assembles_the_simulators_streamed_tool_call(served: str, sim: httpx.Client) -> None:
    client = openai.OpenAI(base_url=f"{served}/sim-openai/v1", api_key="x", max_retries=0)
    messages: Any = [{"role": "user", "content": PROMPT}]
    chunks = list(client.chat.completions.create(model="sim-gpt", messages=messages, tools=[SEND_EMAIL],  # type: ignore[list-item]
                                                 stream=True))
    fragments = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(fragments) > 3  # the arguments come in pieces
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    with client.chat.completions.stream(model="sim-gpt", messages=messages, tools=[SEND_EMAIL]) as stream:  # type: ignore[list-item]
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.id.startswith("call_") and call.function.name == "send_email"
    assert json.loads(call.function.arguments) == {"body": PROMPT}
    assert final.choices[0].finish_reason == "tool_calls"


def test_the_anthropic_sdk_assembles_the_simulators_streamed_tool_use(served: str, sim: httpx.Client) -> None:
    client = anthropic.Anthropic(base_url=f"{served}/sim-anthropic", api_key="x", max_retries=0)
    tool = {"name": "send_email", "input_schema": SEND_EMAIL["function"]["parameters"]}  # type: ignore[index]
    with client.messages.stream(model="sim-claude", max_tokens=50, tools=[tool],  # type: ignore[list-item]
                                messages=[{"role": "user", "content": PROMPT}]) as stream:
        events = list(stream)
        message = stream.get_final_message()
    assert sum(1 for e in events if e.type == "input_json") > 3
    [block] = message.content
    assert block.type == "tool_use" and block.name == "send_email" and block.input == {"body": PROMPT}
    assert message.stop_reason == "tool_use"


def test_the_simulators_gemini_stream_has_a_function_call_part(served: str, sim: httpx.Client) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
            "tools": [{"functionDeclarations": [{"name": "send_email", "parametersJsonSchema":
                                                 SEND_EMAIL["function"]["parameters"]}]}]}  # type: ignore[index]
    answer = httpx.post(f"{served}/sim-gemini/v1beta/models/sim-gemini-flash:streamGenerateContent?alt=sse",
                        json=body, headers={"x-goog-api-key": "x"})
    [chunk] = [json.loads(event.data) for event in _decode([answer.content])]
    candidate = chunk["candidates"][0]
    assert candidate["content"]["parts"] == [{"functionCall": {"name": "send_email", "args": {"body": PROMPT}}}]
    assert candidate["finishReason"] == "STOP"


# --- a streamed call ends with the calls -------------------------------------------------------------------------


async def _stream(served: str, partner: str, options: ChatOptions | None) -> tuple[StreamedResponse, list[str]]:
    spec = {**PARTNERS[partner], "name": partner, "api_key": "k", "timeout_s": 5}
    spec["base_url"] = spec["base_url"].format(url=served)
    pool = HttpPool(10)
    adapter = adapter_for(PartnerConfig.model_validate(spec), pool)
    deltas: list[str] = []

    async def sink(delta: str) -> None:
        deltas.append(delta)

    try:
        request = CallRequest(messages=[Message(role="user", content=PROMPT)], options=options)
        return await call_streamed(adapter, adapter.stream_body(request), sink), deltas
    finally:
        await pool.aclose()


@pytest.mark.parametrize("partner", list(PARTNERS))
def test_a_streamed_call_ends_with_its_tool_calls(served: str, sim: httpx.Client, partner: str) -> None:
    options = ChatOptions.model_validate({"tools": [SEND_EMAIL]})
    result, deltas = asyncio.run(_stream(served, partner, options))
    response = result.response
    assert response.outcome is Outcome.OK, response.error
    assert deltas == [] and response.text == "" and result.streamed_chars == 0  # no text: nothing streamed
    assert result.finish_reason == response.finish_reason == "tool_calls"
    [call] = response.tool_calls or []
    assert call.function.name == "send_email" and json.loads(call.function.arguments) == {"body": PROMPT}
    assert response.usage.prompt_tokens > 0


@pytest.mark.parametrize("partner", ["sim-openai", "sim-anthropic", "sim-gemini"])
def test_a_tool_result_streams_text(served: str, sim: httpx.Client, partner: str) -> None:
    result, deltas = asyncio.run(_stream(served, partner, None))
    assert result.response.tool_calls is None and result.finish_reason == "stop"
    assert "".join(deltas) == result.response.text and len(deltas) > 3


def test_a_stream_cut_inside_the_arguments_is_retryable(served: str, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-openai", json={"stream_cut_after_chars": 8})
    result, deltas = asyncio.run(_stream(served, "sim-openai", ChatOptions.model_validate({"tools": [SEND_EMAIL]})))
    assert result.response.outcome is Outcome.RETRYABLE and deltas == [] and result.streamed_chars == 0


# --- the API's chunks and the request model ----------------------------------------------------------------------


def test_the_api_writes_the_calls_as_openai_streams_them() -> None:
    calls = [ToolCall(id="call_1", function=FunctionCall(name="send_email", arguments='{"body": "a@b.org"}')),
             ToolCall(id="call_2", function=FunctionCall(name="ping", arguments="{}"))]
    chunks = ChatChunks("job1", "sim-openai", 1, include_usage=False)
    wire = chunks.chunk({"role": "assistant", "content": "", "refusal": None}) + chunks.tool_calls(calls) + \
        chunks.chunk({}, "tool_calls")
    parsed = [ChatCompletionChunk.model_validate_json(event.data) for event in _decode([wire])]
    state = openai.lib.streaming.chat.ChatCompletionStreamState()
    for chunk in parsed:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls or []] == [
        ("call_1", "send_email", '{"body": "a@b.org"}'), ("call_2", "ping", "{}")]
    assert [c.index for c in parsed[1].choices[0].delta.tool_calls or []] == [0, 1]


class _Recorded:
    """Stands in for the Redis client: records what the append script would write."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []

    def register_script(self, _source: str) -> Any:
        async def append(keys: list[str], args: list[str]) -> int:
            self.written.append(args[3:])
            return 1
        return append


def test_a_finish_entry_carries_the_calls_encrypted() -> None:
    client = _Recorded()
    stream = JobStream(client, PayloadCipher([Fernet.generate_key()]))  # type: ignore[arg-type]
    call = ToolCall(id="call_1", function=FunctionCall(name="send_email", arguments='{"body": "ann@example.org"}'))
    assert asyncio.run(stream.finish("job1", "token", 1, "tool_calls", Usage(prompt_tokens=2), [call]))
    assert asyncio.run(stream.finish("job1", "token", 1, "stop", Usage()))
    with_calls, without = (dict(zip(w[::2], w[1::2], strict=True)) for w in client.written)
    assert "ann@example.org" not in json.dumps(with_calls) and "c" not in without
    entry = stream._decode("1-0", with_calls)
    assert (entry.kind, entry.finish_reason, entry.tool_calls) == ("finish", "tool_calls", [call])
    assert stream._decode("2-0", without).tool_calls is None


def test_stream_with_tools_is_accepted() -> None:
    request = ChatCompletionRequest.model_validate({"model": "sim-openai", "stream": True, "tools": [SEND_EMAIL],
                                                    "messages": [{"role": "user", "content": "hi"}]})
    submission = request.to_submission("sim-openai")
    assert submission.stream and submission.options is not None and submission.options.tools


# --- the worker's side: the calls go out restored in the finish entry --------------------------------------------


def _recorded_stream() -> tuple[JobStream, _Recorded]:
    client = _Recorded()
    return JobStream(client, PayloadCipher([Fernet.generate_key()])), client  # type: ignore[arg-type]


def _entries(stream: JobStream, client: _Recorded) -> list[Any]:
    return [stream._decode(f"{n}-0", dict(zip(w[::2], w[1::2], strict=True))) for n, w in enumerate(client.written)]


def _restore(text: str) -> str:
    return text.replace("<EMAIL_ADDRESS_1>", "ann@example.org")


@pytest.mark.parametrize("partner", ["sim-openai", "sim-anthropic", "sim-gemini"])
def test_the_relay_finishes_with_the_calls_restored(served: str, sim: httpx.Client, partner: str) -> None:
    spec = {**PARTNERS[partner], "name": partner, "api_key": "k", "timeout_s": 5}
    spec["base_url"] = spec["base_url"].format(url=served)
    stream, client = _recorded_stream()

    async def run() -> Any:
        pool = HttpPool(10)
        try:
            adapter = adapter_for(PartnerConfig.model_validate(spec), pool)
            request = CallRequest(messages=[Message(role="user", content=PROMPT)],
                                  options=ChatOptions.model_validate({"tools": [SEND_EMAIL]}))
            return await relay(stream, adapter, request, job_id="job1", token="t", attempt=1, restore=_restore)
        finally:
            await pool.aclose()

    response = asyncio.run(run())
    [finish] = _entries(stream, client)  # no text: no delta, only the finish
    assert finish.kind == "finish" and finish.finish_reason == "tool_calls"
    assert json.loads(finish.tool_calls[0].function.arguments) == {"body": "mail ann@example.org the report"}
    # The response stays as the partner answered it: the pipeline restores what it stores.
    assert json.loads(response.tool_calls[0].function.arguments) == {"body": PROMPT}


def test_a_run_that_did_not_relay_sends_the_calls_with_its_finish() -> None:
    stream, client = _recorded_stream()
    record = JobRecord(id="job1", tenant="dev", partner="p", requested_partner="p", status=JobStatus.RUNNING,
                       attempt=1, created_at=0.0, params={"stream": True})
    call = ToolCall(id="call_1", function=FunctionCall(name="ping", arguments='{"to": "ann@example.org"}'))
    response = PartnerResponse(Outcome.OK, text="", finish_reason="tool_calls", tool_calls=[call])
    asyncio.run(emit_whole(stream, record, "t", 1, "", response, [call]))
    [finish] = _entries(stream, client)
    assert (finish.kind, finish.finish_reason, finish.tool_calls) == ("finish", "tool_calls", [call])
