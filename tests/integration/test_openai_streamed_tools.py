"""Issue 16, items 1 and 2 together, through the fleet with the official openai SDK: `stream=True` with `tools` on an
OpenAI-, an Anthropic- and a Gemini-shaped partner. The worker relays the partner's own stream, assembles the tool
call it streams (OpenAI `delta.tool_calls`, Anthropic `tool_use` blocks, Gemini `functionCall` parts) and sends it
restored (the e-mail address the partner never saw is back in the arguments) as OpenAI streams a call; the tool
result's round trip then streams text. A producer following the job gets the call in the `finish` event."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import FleetEnv, Proc, finish_job
from tests.integration.test_openai_streaming import follow_events
from tests.integration.test_openai_tools_fleet import EMAIL, PARTNERS, SEND_EMAIL

STREAMING = ("sim-openai", "sim-anthropic", "sim-gemini")


@pytest.fixture(scope="module")
def tools_worker(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker(PARTNERS)
    yield proc
    proc.stop()


@pytest.fixture()
def sdk(fleet: FleetEnv, tools_worker: Proc, sim: httpx.Client) -> openai.OpenAI:
    """The SDK on the shared gateway; the simulated partners stream three characters per event."""
    for name in STREAMING:
        sim.put(f"/_sim/partners/{name}", json={"stream_chunk_chars": 3}).raise_for_status()
    return openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-dev", max_retries=0,
                         timeout=60)


def received(sim: httpx.Client, partner: str, marker: str) -> list[dict[str, Any]]:
    """The bodies `partner` received that carry this test's marker."""
    bodies: list[str] = sim.get(f"/_sim/requests/{partner}").json()["bodies"]
    return [json.loads(body) for body in bodies if marker in body]


def assembled(chunks: list[Any]) -> list[dict[str, Any]]:
    """The tool calls, put together from the chunks' `delta.tool_calls` fragments by index, as a client does."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for fragment in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(fragment.index, {"id": "", "type": "function",
                                                     "function": {"name": "", "arguments": ""}})
            call["id"] = fragment.id or call["id"]
            if fragment.function is not None:
                call["function"]["name"] += fragment.function.name or ""
                call["function"]["arguments"] += fragment.function.arguments or ""
    return [calls[index] for index in sorted(calls)]


@pytest.mark.parametrize("model", STREAMING)
def test_a_streamed_tool_call_round_trip(sdk: openai.OpenAI, api: httpx.Client, sim: httpx.Client,
                                         model: str) -> None:
    marker = secrets.token_hex(4)
    ask = {"role": "user", "content": f"Tell {EMAIL} about run {marker}"}
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=[ask], tools=[SEND_EMAIL],
                                                        stream=True, stream_options={"include_usage": True})
    chunks = list(raw.parse())
    [call] = assembled(chunks)
    assert call["id"] and call["function"]["name"] == "send_email"
    # The partner echoed a placeholder; the app gets its own data back, in valid JSON arguments.
    assert json.loads(call["function"]["arguments"]) == {"body": f"Tell {EMAIL} about run {marker}"}
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    job = finish_job(api, raw.headers["x-fedgate-job-id"])  # still a job, with the call stored restored
    assert (job["status"], job["finish_reason"]) == ("succeeded", "tool_calls")
    assert job["tool_calls"] == [call]
    assert job["redaction_audit"][model] == {"EMAIL_ADDRESS": 1}

    with sdk.chat.completions.stream(model=model, messages=[ask], tools=[SEND_EMAIL]) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    [helper_call] = final.choices[0].message.tool_calls or []
    assert helper_call.function.name == "send_email"
    assert json.loads(helper_call.function.arguments) == {"body": f"Tell {EMAIL} about run {marker}"}

    turn = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": call["id"], "content": f"delivered to {EMAIL}"}
    answer = list(sdk.chat.completions.create(model=model, tools=[SEND_EMAIL], messages=[ask, turn, result],
                                              stream=True))
    pieces = [c.choices[0].delta.content for c in answer if c.choices and c.choices[0].delta.content]
    text = "".join(pieces)
    assert text.startswith(f"Simulated reply from {model}: the tool said ") and f"delivered to {EMAIL}" in text
    assert len(pieces) > 10  # relayed as the partner streamed it
    assert [c.choices[0].finish_reason for c in answer if c.choices][-1] == "stop" and not assembled(answer)

    sent = received(sim, model, marker)
    assert len(sent) == 3  # one partner call per job
    assert EMAIL not in json.dumps(sent) and "<EMAIL_ADDRESS_1>" in json.dumps(sent[0])
    if model != "sim-gemini":  # Gemini asks for its stream in the URL (:streamGenerateContent)
        assert all(body.get("stream") is True for body in sent)


def test_azure_streams_a_tool_call_too(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="sim-azure", messages=[{"role": "user", "content": "hi"}],
                                              tools=[SEND_EMAIL], stream=True))
    [call] = assembled(chunks)
    assert json.loads(call["function"]["arguments"]) == {"body": "hi"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_a_follower_gets_the_tool_call_in_the_finish_event(sdk: openai.OpenAI, api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json={"partner": "sim-anthropic", "stream": True, "options": {
        "tools": [SEND_EMAIL]}, "messages": [{"role": "user", "content": f"write to {EMAIL}"}]})
    assert response.status_code == 202, response.text
    events = follow_events(api, response.json()["id"])
    assert [name for name, _ in events] == ["finish", "job"]
    finish, job = events[0][1], events[1][1]
    assert finish["finish_reason"] == "tool_calls" and finish["tool_calls"] == job["tool_calls"]
    assert json.loads(finish["tool_calls"][0]["function"]["arguments"]) == {"body": f"write to {EMAIL}"}
