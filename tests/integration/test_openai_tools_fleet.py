"""Issue 16, items 2 and 3, through the fleet with the official openai SDK: tool calling round trips on an
OpenAI-, an Anthropic- and a Gemini-shaped partner (PII in tool arguments and results redacted to the partner and
restored to the app), response_format json_schema validated and parsed, the chat options reaching the partner,
an unhonoured field refused with a 400 naming it, and the partner's finish reason."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.helpers import FleetEnv, Proc, calls_with

PARTNERS = "sim-openai,sim-anthropic,sim-gemini,sim-azure"
EMAIL = "ann.lee@example.org"
SEND_EMAIL = {
    "type": "function",
    "function": {
        "name": "send_email",
        "description": "Send an email",
        "parameters": {"type": "object", "properties": {"body": {"type": "string"}}, "required": ["body"]},
    },
}


@pytest.fixture(scope="module")
def tools_worker(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker(PARTNERS)
    yield proc
    proc.stop()


@pytest.fixture()
def sdk(fleet: FleetEnv, tools_worker: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-dev", max_retries=0)


def received(sim: httpx.Client, partner: str, marker: str) -> list[dict[str, Any]]:
    """The bodies `partner` received that carry this test's marker."""
    bodies: list[str] = sim.get(f"/_sim/requests/{partner}").json()["bodies"]
    return [json.loads(body) for body in bodies if marker in body]


@pytest.mark.parametrize("model", ["sim-openai", "sim-anthropic", "sim-gemini"])
def test_a_tool_round_trip_redacts_and_restores(sdk: openai.OpenAI, api: httpx.Client, sim: httpx.Client,
                                                model: str) -> None:
    marker = secrets.token_hex(4)
    ask = {"role": "user", "content": f"Tell {EMAIL} about run {marker}"}
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=[ask],  # type: ignore[list-item]
                                                        tools=[SEND_EMAIL])  # type: ignore[list-item]
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "send_email"
    # The partner echoed a placeholder; the app gets its own data back, in valid JSON arguments.
    assert json.loads(call.function.arguments) == {"body": f"Tell {EMAIL} about run {marker}"}
    job = api.get(f"/v1/jobs/{raw.headers['x-fedgate-job-id']}").json()
    assert (job["finish_reason"], job["tool_calls"][0]["function"]["name"]) == ("tool_calls", "send_email")
    assert job["redaction_audit"][model] == {"EMAIL_ADDRESS": 1}

    result = {"role": "tool", "tool_call_id": call.id, "content": f"delivered to {EMAIL}"}
    second = sdk.chat.completions.create(model=model, tools=[SEND_EMAIL],  # type: ignore[list-item]
                                         messages=[ask, choice.message.model_dump(exclude_none=True), result])  # type: ignore[list-item]
    assert second.choices[0].finish_reason == "stop"
    answer = second.choices[0].message.content or ""
    assert answer.startswith(f"Simulated reply from {model}: the tool said ") and f"delivered to {EMAIL}" in answer
    assert not second.choices[0].message.tool_calls

    sent = received(sim, model, marker)
    assert len(sent) == 2  # one partner call per job
    assert EMAIL not in json.dumps(sent) and "<EMAIL_ADDRESS_1>" in json.dumps(sent[1])


class Verdict(BaseModel):
    label: str
    score: float


@pytest.mark.parametrize("model", ["sim-openai", "sim-anthropic"])
def test_response_format_json_schema_is_validated_and_parsed(sdk: openai.OpenAI, api: httpx.Client,
                                                             sim: httpx.Client, model: str) -> None:
    marker = secrets.token_hex(4)
    raw = sdk.chat.completions.with_raw_response.parse(
        model=model, messages=[{"role": "user", "content": f"classify {marker}"}], response_format=Verdict)
    completion = raw.parse()
    parsed = completion.choices[0].message.parsed
    assert parsed == Verdict(label="sim", score=1.0)
    job = api.get(f"/v1/jobs/{raw.headers['x-fedgate-job-id']}").json()
    assert job["parsed"] == {"label": "sim", "score": 1.0}
    [sent] = received(sim, model, marker)
    if model == "sim-openai":  # OpenAI gets the schema as it was given, strict
        assert sent["response_format"]["json_schema"]["name"] == "Verdict"
        assert sent["response_format"]["json_schema"]["strict"] is True
    else:  # Anthropic: the schema as a forced tool
        assert sent["tool_choice"] == {"type": "tool", "name": "emit_output"}


def test_an_off_schema_answer_is_refused(sdk: openai.OpenAI, sim: httpx.Client) -> None:
    sim.put("/_sim/partners/sim-gemini", json={"offcontract_rate": 1})
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with pytest.raises(openai.InternalServerError, match="violates the contract"):
        sdk.chat.completions.create(model="sim-gemini", messages=[{"role": "user", "content": "count"}],
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "count", "schema": schema}})


def test_options_reach_the_partner(sdk: openai.OpenAI, sim: httpx.Client) -> None:
    marker = secrets.token_hex(4)
    sdk.chat.completions.create(model="sim-openai", messages=[{"role": "user", "content": f"hi {marker}"}],
                                stop=["END"], seed=7, top_p=0.3, presence_penalty=0.5, frequency_penalty=-0.5,
                                user="app-user-1", logprobs=True, top_logprobs=2)
    [sent] = received(sim, "sim-openai", marker)
    assert {k: sent[k] for k in ("stop", "seed", "top_p", "presence_penalty", "frequency_penalty", "user",
                                 "logprobs", "top_logprobs")} == {
        "stop": ["END"], "seed": 7, "top_p": 0.3, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "user": "app-user-1", "logprobs": True, "top_logprobs": 2}
    sdk.chat.completions.create(model="sim-gemini", messages=[{"role": "user", "content": f"hi {marker}"}],
                                stop="END", seed=7, top_p=0.3)
    [sent] = received(sim, "sim-gemini", marker)
    config = sent["generationConfig"]
    assert (config["stopSequences"], config["seed"], config["topP"]) == (["END"], 7, 0.3)


@pytest.mark.parametrize(("model", "fields", "field"), [
    ("sim-anthropic", {"seed": 7}, "seed"),
    ("sim-anthropic", {"logprobs": True}, "logprobs"),
    ("sim-gemini", {"user": "u"}, "user"),
])
def test_an_unhonoured_field_is_refused_naming_it(sdk: openai.OpenAI, sim: httpx.Client, model: str,
                                                  fields: dict[str, Any], field: str) -> None:
    marker = secrets.token_hex(4)
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": marker}], **fields)
    assert raised.value.body["param"] == field  # type: ignore[index]
    assert f"{field}: the partner {model!r}" in raised.value.message
    assert calls_with(sim, model, marker) == 0


@pytest.mark.parametrize("model", ["sim-openai", "sim-anthropic", "sim-gemini"])
def test_finish_reason_length(sdk: openai.OpenAI, model: str) -> None:
    completion = sdk.chat.completions.create(model=model, max_tokens=3,
                                             messages=[{"role": "user", "content": "tell me a long story " * 5}])
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == f"Simulated reply from {model}: tell me a long story "[:12]


def test_image_parts_pass_through_with_text_redacted(sdk: openai.OpenAI, sim: httpx.Client) -> None:
    marker = secrets.token_hex(4)
    image = {"type": "image_url", "image_url": {"url": "https://img.example/receipt.png", "detail": "low"}}
    for model in ("sim-openai", "sim-anthropic"):
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "text", "text": f"Whose receipt? Mail {EMAIL} {marker}"}, image]}])  # type: ignore[list-item]
    [to_openai] = received(sim, "sim-openai", marker)
    assert to_openai["messages"][0]["content"][1] == image
    [to_anthropic] = received(sim, "sim-anthropic", marker)
    assert to_anthropic["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "url", "url": "https://img.example/receipt.png"}}
    assert EMAIL not in json.dumps([to_openai, to_anthropic])


def test_native_jobs_take_options(api: httpx.Client, tools_worker: Proc) -> None:
    response = api.post("/v1/jobs", json={"partner": "sim-azure", "messages": [
        {"role": "user", "content": f"write to {EMAIL}"}], "options": {"tools": [SEND_EMAIL]}})
    assert response.status_code == 202, response.text
    job = api.get(f"/v1/jobs/{response.json()['id']}", params={"wait": 20}).json()
    assert (job["status"], job["finish_reason"], job["output"]) == ("succeeded", "tool_calls", "")
    assert json.loads(job["tool_calls"][0]["function"]["arguments"]) == {"body": f"write to {EMAIL}"}
    refused = api.post("/v1/jobs", json={"partner": "sim-anthropic", "prompt": "x", "options": {"seed": 1}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "seed"
