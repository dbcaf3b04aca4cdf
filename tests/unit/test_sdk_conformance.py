"""Conformance with the partners' official SDKs, not only with our own simulator.

- Requests: the body each adapter builds validates against the SDK's request type (openai's
  `CompletionCreateParams`, anthropic's `MessageCreateParams`, google-genai's `Content` / `GenerationConfig`),
  strictly: unknown keys at any depth, wrong types and missing required keys are errors. And the SDK itself, given
  the same request, sends the same JSON (recorded by the simulator).
- Responses: every simulator route's answer, with and without structured output, parses with the SDK's response
  model (`ChatCompletion`, `Message`, `GenerateContentResponse`) without fields the SDK does not know, and the SDK
  clients read it over the wire (compressed, as the simulator answers by default).
"""

from __future__ import annotations

import collections.abc
import json
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, NotRequired, Required, Union, get_args, get_origin, get_type_hints

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import message_create_params
from google import genai
from google.genai import types as genai_types
from openai.types.chat import ChatCompletion, completion_create_params
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict, is_typeddict

from gateway_core.config import PartnerConfig
from gateway_core.jobs.models import Message
from gateway_core.partners.adapters import adapter_for
from gateway_core.partners.adapters.base import CallRequest, HttpPool, OutputSchema, PartnerAdapter
from partner_simulator import PartnerBehaviour, SimulatorConfig
from tests.simulator_process import running_simulator

# --- strict mirrors of the SDKs' request TypedDicts ----------------------------------------------------

_SEQUENCES = {list, collections.abc.Iterable, collections.abc.Sequence, typing.Iterable, typing.Sequence}
_STRICT = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


def _strict(tp: Any, made: dict[Any, Any]) -> Any:
    """`tp` with every TypedDict refusing unknown keys and every Iterable a list.

    pydantic validates an SDK TypedDict leniently: unknown keys are dropped and `Iterable[...]` fields (messages,
    tools) are validated lazily, i.e. not at all until someone iterates them.
    """
    if is_typeddict(tp):
        if tp not in made:
            made[tp] = None
            fields = {name: _strict(hint, made) for name, hint in get_type_hints(tp, include_extras=True).items()}
            made[tp] = with_config(_STRICT)(TypedDict(tp.__name__, fields, total=tp.__total__))
        assert made[tp] is not None, f"{tp.__name__} refers to itself; teach _strict forward references"
        return made[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Required, NotRequired):
        return origin[_strict(args[0], made)]
    if origin is Annotated:  # the SDKs' PropertyInfo metadata; none of these fields is renamed on the wire
        return _strict(args[0], made)
    if origin in (Union, types.UnionType):
        return Union[tuple(_strict(arg, made) for arg in args)]  # noqa: UP007 - built from a runtime tuple
    if origin in _SEQUENCES or getattr(origin, "__name__", "") == "SequenceNotStr":
        return list[_strict(args[0], made)] if args else list
    if origin in (dict, collections.abc.Mapping, typing.Mapping):
        return dict[_strict(args[0], made), _strict(args[1], made)]
    return tp


def strict_params(typed_dict: Any) -> TypeAdapter[Any]:
    return TypeAdapter(_strict(typed_dict, {}))


OPENAI_PARAMS = strict_params(completion_create_params.CompletionCreateParamsNonStreaming)
ANTHROPIC_PARAMS = strict_params(message_create_params.MessageCreateParamsNonStreaming)
GEMINI_CONTENTS = TypeAdapter(list[genai_types.Content])
# google-genai's types forbid unknown fields already; these are generateContent's top-level request fields.
GEMINI_REQUEST_FIELDS = {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig",
                         "cachedContent"}
# anthropic 1.0 removed the sampling parameters from the typed create params (the API still takes them on the
# models that support sampling; the SDK's migration guide sends them through extra_body). The Anthropic adapter
# sends `temperature` when a job sets one: that key, and only it, is outside the SDK's types.
ANTHROPIC_UNTYPED_SAMPLING = {"temperature"}

# --- the requests every adapter is checked with ---------------------------------------------------------

CONVERSATION = [
    Message(role="system", content="You are terse."),
    Message(role="user", content="Classify: cheap pills, click now"),
    Message(role="assistant", content="Which labels?"),
    Message(role="user", content="spam or ham"),
]
VERDICT = OutputSchema(
    name="spam verdict/v2",
    schema={
        "$defs": {"Why": {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}},
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["spam", "ham"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "why": {"$ref": "#/$defs/Why"},
            "note": {"type": ["string", "null"]},
        },
        "required": ["label", "score", "why"],
        "additionalProperties": False,
    },
)
REQUESTS = {
    "text": CallRequest(messages=CONVERSATION),
    "sampling": CallRequest(messages=CONVERSATION, max_tokens=77, temperature=0.4),
    "structured": CallRequest(messages=CONVERSATION, output=VERDICT),
    "single-user-message": CallRequest(messages=[Message(role="user", content="hi")]),
}


def partner(adapter: str, base_url: str = "https://partner.example", **fields: Any) -> PartnerConfig:
    models = {"openai": "sim-gpt", "anthropic": "sim-claude", "azure_openai": "sim-gpt-deployment",
              "gemini": "sim-gemini-flash"}
    return PartnerConfig.model_validate(
        {"name": adapter, "adapter": adapter, "base_url": base_url, "model": models[adapter], "api_key": "sk-test",
         **fields}
    )


def built(adapter: str) -> PartnerAdapter:
    return adapter_for(partner(adapter), HttpPool(1))


def body_of(adapter: str, request: str) -> dict[str, Any]:
    return built(adapter).body(REQUESTS[request])


# --- the checker refuses what the SDK would -----------------------------------------------------------


OPENAI_OK = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({**OPENAI_OK, "max_output_tokens": 5}, "extra_forbidden"),
        ({**OPENAI_OK, "messages": [{"role": "user", "content": "hi", "speaker": "x"}]}, "extra_forbidden"),
        ({**OPENAI_OK, "messages": [{"role": "bot", "content": "hi"}]}, "literal_error"),
        ({**OPENAI_OK, "max_tokens": "5"}, "int_type"),
        ({"messages": OPENAI_OK["messages"]}, "missing"),
        ({**OPENAI_OK, "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "missing"),
    ],
    ids=["unknown-key", "unknown-nested-key", "bad-literal", "wrong-type", "no-model", "no-schema-name"],
)
def test_the_strict_mirror_refuses_what_the_openai_types_do_not_allow(body: dict[str, Any], error_type: str) -> None:
    OPENAI_PARAMS.validate_python(OPENAI_OK)
    with pytest.raises(ValidationError) as raised:
        OPENAI_PARAMS.validate_python(body)
    assert error_type in {error["type"] for error in raised.value.errors()}


# --- requests: each adapter's body against the SDK's request types -------------------------------------


@pytest.mark.parametrize("request_name", REQUESTS)
def test_openai_body_is_a_chat_completion_create_params(request_name: str) -> None:
    body = body_of("openai", request_name)
    OPENAI_PARAMS.validate_python(body)


@pytest.mark.parametrize("request_name", REQUESTS)
def test_azure_body_is_openais_once_the_deployment_is_the_model(request_name: str) -> None:
    body = body_of("azure_openai", request_name)
    assert "model" not in body  # the deployment in the URL chooses the model
    # openai.AzureOpenAI takes the deployment as `model` (and sends it in the body, which Azure ignores).
    OPENAI_PARAMS.validate_python({**body, "model": "sim-gpt-deployment"})


@pytest.mark.parametrize("request_name", REQUESTS)
def test_anthropic_body_is_a_message_create_params(request_name: str) -> None:
    body = body_of("anthropic", request_name)
    typed = {key: value for key, value in body.items() if key not in ANTHROPIC_UNTYPED_SAMPLING}
    ANTHROPIC_PARAMS.validate_python(typed)


def test_anthropic_sends_an_untyped_sampling_key_only_when_the_job_sets_one() -> None:
    assert set(body_of("anthropic", "text")) & ANTHROPIC_UNTYPED_SAMPLING == set()
    with pytest.raises(ValidationError) as raised:
        ANTHROPIC_PARAMS.validate_python(body_of("anthropic", "sampling"))
    assert {tuple(error["loc"]) for error in raised.value.errors()} == {("temperature",)}


@pytest.mark.parametrize("request_name", REQUESTS)
def test_gemini_body_is_made_of_google_genai_types(request_name: str) -> None:
    body = body_of("gemini", request_name)
    assert set(body) <= GEMINI_REQUEST_FIELDS
    contents = GEMINI_CONTENTS.validate_python(body["contents"])
    assert {content.role for content in contents} <= {"user", "model"}
    if "systemInstruction" in body:
        genai_types.Content.model_validate(body["systemInstruction"])
    config = genai_types.GenerationConfig.model_validate(body["generationConfig"])
    if REQUESTS[request_name].output is not None:
        assert config.response_mime_type == "application/json"
        assert config.response_json_schema == VERDICT.schema


def test_google_genai_types_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        genai_types.GenerationConfig.model_validate({"maxOutputTokens": 5, "max_tokens": 5})
    with pytest.raises(ValidationError):
        genai_types.Content.model_validate({"role": "user", "parts": [{"text": "x", "kind": "text"}]})


# --- requests: the SDK, given the same request, sends the same JSON ------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with running_simulator(SimulatorConfig.demo().model_copy(update={"record_bodies": True})) as base_url:
        yield base_url


@pytest.fixture
def sim(served: str) -> Iterator[str]:
    httpx.post(f"{served}/_sim/reset")
    yield served
    for name in ("sim-openai", "sim-anthropic", "sim-azure", "sim-gemini"):
        httpx.put(f"{served}/_sim/partners/{name}", json=PartnerBehaviour().model_dump())
    httpx.post(f"{served}/_sim/reset")


def last_received(sim: str, partner_name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(httpx.get(f"{sim}/_sim/requests/{partner_name}").json()["bodies"][-1])
    return body


def openai_sdk(sim: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim}/sim-openai/v1", api_key="sk-test", max_retries=0, timeout=10)


def azure_sdk(sim: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=f"{sim}/sim-azure", api_key="sk-test", api_version="2024-10-21",
                              max_retries=0, timeout=10)


def anthropic_sdk(sim: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{sim}/sim-anthropic", api_key="sk-test", max_retries=0, timeout=10)


def gemini_sdk(sim: str) -> genai.Client:
    options = genai_types.HttpOptions(base_url=f"{sim}/sim-gemini", api_version="v1beta", timeout=10_000)
    return genai.Client(api_key="sk-test", http_options=options)


@pytest.mark.parametrize("request_name", REQUESTS)
def test_openai_sdk_sends_what_the_adapter_sends(sim: str, request_name: str) -> None:
    body = body_of("openai", request_name)
    openai_sdk(sim).chat.completions.create(**body)  # keyword arguments: an unknown key is a TypeError
    assert last_received(sim, "sim-openai") == body


@pytest.mark.parametrize("request_name", REQUESTS)
def test_azure_sdk_sends_what_the_adapter_sends_plus_the_deployment_as_model(sim: str, request_name: str) -> None:
    body = body_of("azure_openai", request_name)
    azure_sdk(sim).chat.completions.create(model="sim-gpt-deployment", **body)
    assert last_received(sim, "sim-azure") == {**body, "model": "sim-gpt-deployment"}


@pytest.mark.parametrize("request_name", REQUESTS)
def test_anthropic_sdk_sends_what_the_adapter_sends(sim: str, request_name: str) -> None:
    body = body_of("anthropic", request_name)
    typed = {key: value for key, value in body.items() if key not in ANTHROPIC_UNTYPED_SAMPLING}
    untyped = {key: value for key, value in body.items() if key in ANTHROPIC_UNTYPED_SAMPLING}
    anthropic_sdk(sim).messages.create(**typed, extra_body=untyped or None)
    assert last_received(sim, "sim-anthropic") == body


@pytest.mark.parametrize("request_name", REQUESTS)
def test_google_genai_sends_what_the_adapter_sends(sim: str, request_name: str) -> None:
    request = REQUESTS[request_name]
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    contents = [
        genai_types.Content(role="model" if m.role == "assistant" else "user", parts=[genai_types.Part(text=m.content)])
        for m in request.messages
        if m.role != "system"
    ]
    config = genai_types.GenerateContentConfig(
        system_instruction=system or None,
        max_output_tokens=request.max_tokens or 1024,
        temperature=request.temperature,
        response_mime_type="application/json" if request.output else None,
        response_json_schema=request.output.schema if request.output else None,
    )
    client = gemini_sdk(sim)  # held: a google-genai client closes its connection pool when collected
    client.models.generate_content(model="sim-gemini-flash", contents=contents, config=config)
    sent = last_received(sim, "sim-gemini")
    if "systemInstruction" in sent:  # the SDK labels the system instruction's role; the API does not need it
        assert sent["systemInstruction"].pop("role") == "user"
    assert sent == body_of("gemini", request_name)


# --- responses: the simulator's answers parse with the SDKs' response models -------------------------


def unknown_fields(model: BaseModel, path: str = "") -> list[str]:
    """Fields in the answer that the SDK model does not declare (openai/anthropic models keep them as extras)."""
    found = [f"{path}{name}" for name in (model.model_extra or {})]
    for name in type(model).model_fields:
        found += _unknown_in(getattr(model, name), f"{path}{name}.")
    return found


def _unknown_in(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return unknown_fields(value, path)
    if isinstance(value, list):
        return [field for index, item in enumerate(value) for field in _unknown_in(item, f"{path}{index}.")]
    return []


SCHEMA = VERDICT.schema
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA}}
TOOL = {"name": "emit_output", "input_schema": SCHEMA}
OPENAI_BODIES = {
    "text": {},
    "json_schema": {"response_format": SCHEMA_FORMAT},
    "json_object": {"response_format": {"type": "json_object"}},
}
# Azure annotates answers with its content filter's verdicts; the openai SDK keeps them as extra fields.
AZURE_EXTRAS = {"prompt_filter_results", "choices.0.content_filter_results"}


def post(sim: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(f"{sim}{path}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-encoding"] == "br"  # what real APIs answer httpx's Accept-Encoding with
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("mode", OPENAI_BODIES)
def test_openai_route_answers_a_chat_completion(sim: str, mode: str) -> None:
    body = {"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}], **OPENAI_BODIES[mode]}
    answer = ChatCompletion.model_validate(post(sim, "/sim-openai/v1/chat/completions", body,
                                                {"authorization": "Bearer k"}))
    assert unknown_fields(answer) == []
    content = answer.choices[0].message.content or ""
    assert json.loads(content) if mode != "text" else content


@pytest.mark.parametrize("mode", ["text", "json_schema"])
def test_azure_route_answers_a_chat_completion_with_content_filter_results(sim: str, mode: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **OPENAI_BODIES[mode]}
    path = "/sim-azure/openai/deployments/sim-gpt-deployment/chat/completions?api-version=2024-10-21"
    answer = ChatCompletion.model_validate(post(sim, path, body, {"api-key": "k"}))
    assert set(unknown_fields(answer)) == AZURE_EXTRAS


@pytest.mark.parametrize("structured", [False, True], ids=["text", "forced-tool"])
def test_anthropic_route_answers_a_message(sim: str, structured: bool) -> None:
    body: dict[str, Any] = {"model": "sim-claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    if structured:
        body.update(tools=[TOOL], tool_choice={"type": "tool", "name": "emit_output"})
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    answer = AnthropicMessage.model_validate(post(sim, "/sim-anthropic/v1/messages", body, headers))
    assert unknown_fields(answer) == []
    assert answer.content[0].type == ("tool_use" if structured else "text")


@pytest.mark.parametrize(
    "generation_config",
    [
        {},
        {"responseMimeType": "application/json"},
        {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA},
        {"responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"label": {"type": "STRING", "enum": ["spam"]}}, "required": ["label"]}},
    ],
    ids=["text", "json", "json-schema", "openapi-schema"],
)
def test_gemini_route_answers_a_generate_content_response(sim: str, generation_config: dict[str, Any]) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": generation_config}
    path = "/sim-gemini/v1beta/models/sim-gemini-flash:generateContent"
    # google-genai's models forbid unknown fields, so validating is the strict check.
    answer = genai_types.GenerateContentResponse.model_validate(post(sim, path, body, {"x-goog-api-key": "k"}))
    assert answer.text
    assert answer.usage_metadata is not None and answer.usage_metadata.candidates_token_count
    if generation_config:
        json.loads(answer.text)


# --- responses: the SDK clients read the simulator over the wire ---------------------------------------


def test_openai_sdk_reads_structured_output(sim: str) -> None:
    completion = openai_sdk(sim).chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": "hi"}], response_format=SCHEMA_FORMAT,
    )
    assert json.loads(completion.choices[0].message.content or "")["label"] == "spam"


def test_azure_sdk_reads_an_answer_and_raises_its_errors(sim: str) -> None:
    client = azure_sdk(sim)
    completion = client.chat.completions.create(model="sim-gpt-deployment", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "Simulated reply from sim-azure: x"
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert raised.value.code == "DeploymentNotFound"


def test_anthropic_sdk_reads_a_forced_tool_and_authenticates_its_way(sim: str) -> None:
    message = anthropic_sdk(sim).messages.create(
        model="sim-claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
        tools=[TOOL], tool_choice={"type": "tool", "name": "emit_output"},
    )
    [block] = message.content
    assert block.type == "tool_use"
    assert block.input == {"label": "spam", "score": 1.0, "why": {"reason": "sim"}}


def test_anthropic_sdk_sees_an_overloaded_partner(sim: str) -> None:
    httpx.put(f"{sim}/_sim/partners/sim-anthropic", json={"error_rate": 1, "error_status": 529})
    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic_sdk(sim).messages.create(
            model="sim-claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.status_code == 529
    assert raised.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                             "message": "Simulated partner failure."}}


def test_google_genai_reads_structured_output_and_raises_its_errors(sim: str) -> None:
    client = gemini_sdk(sim)
    config = genai_types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=SCHEMA)
    answer = client.models.generate_content(model="sim-gemini-flash", contents="hi", config=config)
    assert json.loads(answer.text or "")["why"] == {"reason": "sim"}
    httpx.put(f"{sim}/_sim/partners/sim-gemini", json={"error_rate": 1, "error_status": 429})
    with pytest.raises(genai.errors.ClientError) as raised:
        client.models.generate_content(model="sim-gemini-flash", contents="hi")
    assert (raised.value.code, raised.value.status) == (429, "RESOURCE_EXHAUSTED")
