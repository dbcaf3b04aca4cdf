"""Issue 16 (tools, options, finish reasons, images): each adapter maps tool definitions, tool calls, tool results,
images and the chat options onto its partner's wire format (checked against the official SDKs' request types, as
tests/unit/test_sdk_conformance.py does for text) and reads tool calls and finish reasons back as OpenAI's; a field
an adapter cannot honour fails its call as FATAL, naming the field; the simulator answers tool calls in each wire
format, parseable by the SDKs."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from anthropic.types import Message as AnthropicMessage
from google.genai import types as genai_types
from openai.types.chat import ChatCompletion
from pydantic import TypeAdapter, ValidationError

from gateway_core.errors import RequestError
from gateway_core.jobs.chat_options import ChatOptions, ImagePart, ImageURL, TextPart
from gateway_core.jobs.chat_request import ChatCompletionRequest
from gateway_core.jobs.models import Message
from gateway_core.jobs.request_checks import check_request_options
from gateway_core.partners.adapters import adapter_for
from gateway_core.partners.adapters.base import CallRequest, HttpPool, Outcome, OutputSchema
from gateway_core.partners.adapters.capabilities import first_unhonoured
from gateway_core.redaction import PlaceholderMap, RedactionError, RedactionPolicy, Redactor
from tests.unit.test_sdk_conformance import (
    ANTHROPIC_PARAMS,
    GEMINI_CONTENTS,
    GEMINI_REQUEST_FIELDS,
    OPENAI_PARAMS,
    anthropic_sdk,
    built,
    gemini_sdk,
    openai_sdk,
    partner,
    post,
    served,  # noqa: F401 - the module's simulator fixture
    sim,  # noqa: F401 - the per-test simulator fixture
    unknown_fields,
)
from workers.message_redaction import redact_message, restore_tool_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CALL_2 = {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
TOOL_TURNS = [
    Message(role="system", content="Use tools."),
    Message(role="user", content="Weather in Paris and Rome?"),
    Message.model_validate({"role": "assistant", "content": None, "tool_calls": [CALL, CALL_2]}),
    Message(role="tool", tool_call_id="call_1", content='{"celsius": 21}'),
    Message(role="tool", tool_call_id="call_2", content="sunny"),
]
IMAGE_DATA = "data:image/png;base64,iVBORw0KGgo="
IMAGE_TURN = Message(role="user", content=[
    TextPart(type="text", text="What is in these?"),
    ImagePart(type="image_url", image_url=ImageURL(url=IMAGE_DATA)),
    ImagePart(type="image_url", image_url=ImageURL(url="https://img.example/cat.jpg", detail="low")),
])
SHARED = ChatOptions.model_validate({"tools": [WEATHER], "tool_choice": "auto", "top_p": 0.5, "stop": ["END"]})
OPENAI_ONLY = ChatOptions.model_validate({"seed": 7, "presence_penalty": 0.1, "frequency_penalty": -0.1, "user": "u1",
                                          "logprobs": True, "top_logprobs": 2})
ANTHROPIC_UNTYPED = {"temperature", "top_p"}  # sampling keys anthropic>=1.0 leaves out of its typed params


def tool_request(options: ChatOptions = SHARED) -> CallRequest:
    return CallRequest(messages=TOOL_TURNS, options=options)


# --- requests: each adapter's body against the SDK's request types -------------------------------------


@pytest.mark.parametrize("options", [SHARED, OPENAI_ONLY], ids=["tools", "openai-only-options"])
@pytest.mark.parametrize("adapter", ["openai", "azure_openai"])
def test_openai_bodies_carry_tools_calls_results_and_options(adapter: str, options: ChatOptions) -> None:
    body = built(adapter).body(tool_request(options))
    OPENAI_PARAMS.validate_python({**body, "model": "m"})
    assert body["messages"][2] == {"role": "assistant", "content": None, "tool_calls": [CALL, CALL_2]}
    assert body["messages"][3] == {"role": "tool", "content": '{"celsius": 21}', "tool_call_id": "call_1"}
    for name, value in options.model_dump(exclude_none=True).items():
        assert body[name] == value


def test_openai_body_passes_image_parts_and_response_formats_as_they_are() -> None:
    body = built("openai").body(CallRequest(messages=[IMAGE_TURN], output=OutputSchema(
        "json_object", {"type": "object"}, json_object=True)))
    OPENAI_PARAMS.validate_python(body)
    assert body["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": IMAGE_DATA}}
    assert body["response_format"] == {"type": "json_object"}
    strict = built("openai").body(CallRequest(messages=[IMAGE_TURN], output=OutputSchema(
        "answer", {"type": "object"}, strict=True)))
    assert strict["response_format"]["json_schema"] == {"name": "answer", "schema": {"type": "object"}, "strict": True}


def test_anthropic_body_has_tool_use_and_merged_tool_results() -> None:
    body = built("anthropic").body(tool_request())
    ANTHROPIC_PARAMS.validate_python({k: v for k, v in body.items() if k not in ANTHROPIC_UNTYPED})
    assert body["system"] == "Use tools."
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]}
    assert body["messages"][2] == {"role": "user", "content": [  # consecutive results: one user turn
        {"type": "tool_result", "tool_use_id": "call_1", "content": '{"celsius": 21}'},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "sunny"},
    ]}
    assert body["tools"] == [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
                              "description": "The weather in a city"}]
    assert (body["tool_choice"], body["top_p"], body["stop_sequences"]) == ({"type": "auto"}, 0.5, ["END"])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
     ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"})],
)
def test_anthropic_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    options = ChatOptions.model_validate({"tools": [WEATHER], "tool_choice": choice})
    body = built("anthropic").body(tool_request(options))
    assert body["tool_choice"] == expected
    ANTHROPIC_PARAMS.validate_python(body)


def test_anthropic_images_are_base64_or_url_sources_and_user_is_metadata() -> None:
    options = ChatOptions(user="end-user-7")
    body = built("anthropic").body(CallRequest(messages=[IMAGE_TURN], options=options))
    ANTHROPIC_PARAMS.validate_python(body)
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://img.example/cat.jpg"}},
    ]
    assert body["metadata"] == {"user_id": "end-user-7"}


def test_gemini_body_has_function_calls_responses_and_declarations() -> None:
    options = ChatOptions.model_validate({**SHARED.model_dump(exclude_none=True), "seed": 3, "presence_penalty": 0.2,
                                          "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    body = built("gemini").body(tool_request(options))
    assert set(body) <= GEMINI_REQUEST_FIELDS
    contents = GEMINI_CONTENTS.validate_python(body["contents"])
    assert [c.role for c in contents] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                                            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]
    assert body["contents"][2]["parts"] == [  # named by the call's function, one turn for both results
        {"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}},
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
    ]
    [tool] = TypeAdapter(list[genai_types.Tool]).validate_python(body["tools"])
    assert tool.function_declarations and tool.function_declarations[0].parameters_json_schema == WEATHER[
        "function"]["parameters"]  # type: ignore[index]
    config = genai_types.ToolConfig.model_validate(body["toolConfig"])
    assert config.function_calling_config is not None
    assert config.function_calling_config.allowed_function_names == ["get_weather"]
    generation = genai_types.GenerationConfig.model_validate(body["generationConfig"])
    assert (generation.top_p, generation.stop_sequences, generation.seed, generation.presence_penalty) == (
        0.5, ["END"], 3, 0.2)


def test_gemini_images_are_inline_data_or_file_data() -> None:
    body = built("gemini").body(CallRequest(messages=[IMAGE_TURN]))
    GEMINI_CONTENTS.validate_python(body["contents"])
    assert body["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "https://img.example/cat.jpg"}},
    ]


# --- fields an adapter cannot honour ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "options", "field"),
    [("anthropic", {"seed": 1}, "seed"), ("anthropic", {"logprobs": True}, "logprobs"),
     ("gemini", {"user": "u"}, "user"), ("gemini", {"logprobs": True}, "logprobs"),
     ("generic", {"tools": [WEATHER]}, "tools"), ("generic", {"stop": ["x"]}, "stop")],
)
def test_an_unhonoured_field_fails_the_call_as_fatal_naming_it(adapter: str, options: dict[str, Any],
                                                               field: str) -> None:
    request = CallRequest(messages=[Message(role="user", content="hi")], options=ChatOptions.model_validate(options))
    assert first_unhonoured(adapter, request.messages, request.options) == field
    if adapter == "generic":
        cfg = partner("openai").model_copy(update={"adapter": "generic"})
        response = _call(adapter_for(cfg, HttpPool(1)), request)
    else:
        response = _call(built(adapter), request)
    assert response.outcome is Outcome.FATAL
    assert response.error == f"{field}: the {adapter} adapter does not support this field"


def test_tool_turns_and_images_need_an_adapter_that_takes_them() -> None:
    assert first_unhonoured("generic", TOOL_TURNS, None) == "tools"
    assert first_unhonoured("generic", [IMAGE_TURN], None) == "images"
    assert first_unhonoured("openai", [*TOOL_TURNS, IMAGE_TURN], OPENAI_ONLY) is None


def _call(adapter: Any, request: CallRequest) -> Any:
    return asyncio.run(adapter.call(request))


# --- answers: tool calls and finish reasons read back as OpenAI's --------------------------------------


def interpret(adapter: str, body: dict[str, Any]) -> Any:
    result = built(adapter).interpret(200, json.dumps(body).encode(), httpx.Headers())
    assert result.outcome is Outcome.OK, result.error
    return result


def test_openai_tool_calls_are_read() -> None:
    body = {"choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": [CALL]}}], "usage": {}}
    result = interpret("openai", body)
    assert (result.text, result.finish_reason) == ("", "tool_calls")
    assert [c.model_dump() for c in result.tool_calls] == [CALL]


@pytest.mark.parametrize(("reason", "finish"), [("stop", "stop"), ("length", "length"),
                                                ("content_filter", "content_filter")])
def test_openai_finish_reason_is_the_partners(reason: str, finish: str) -> None:
    body = {"choices": [{"index": 0, "finish_reason": reason, "message": {"role": "assistant", "content": "x"}}]}
    assert interpret("openai", body).finish_reason == finish


@pytest.mark.parametrize(("reason", "finish"), [("end_turn", "stop"), ("stop_sequence", "stop"),
                                                ("max_tokens", "length")])
def test_anthropic_stop_reason_maps_to_finish_reason(reason: str, finish: str) -> None:
    body = {"content": [{"type": "text", "text": "x"}], "stop_reason": reason, "usage": {}}
    assert interpret("anthropic", body).finish_reason == finish


@pytest.mark.parametrize(("reason", "finish"), [("STOP", "stop"), ("MAX_TOKENS", "length"),
                                                ("SAFETY", "content_filter")])
def test_gemini_finish_reason_maps(reason: str, finish: str) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": reason}]}
    assert interpret("gemini", body).finish_reason == finish


def test_gemini_function_calls_get_ids() -> None:
    body = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Bergen"}}}]}, "finishReason": "STOP"}]}
    result = interpret("gemini", body)
    assert (result.text, result.finish_reason) == ("", "tool_calls")
    assert [json.loads(c.function.arguments) for c in result.tool_calls] == [{"city": "Oslo"}, {"city": "Bergen"}]
    ids = [c.id for c in result.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


# --- the request model ---------------------------------------------------------------------------------


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                 **fields})


def test_request_builds_options_and_turns() -> None:
    request = chat(messages=[{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": None, "tool_calls": [CALL]},
                             {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "ok"}]}],
                   tools=[WEATHER], stop="END", seed=1)
    submission = request.to_submission("p")
    assert submission.options is not None
    assert (submission.options.stop, submission.options.seed) == (["END"], 1)
    assert [m.role for m in submission.conversation()] == ["user", "assistant", "tool"]
    assert submission.conversation()[2].content == "ok"


@pytest.mark.parametrize(
    ("fields", "says"),
    [({"tool_choice": "required"}, "needs tools"),
     ({"messages": [{"role": "user", "content": None}]}, "content is required"),
     ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
     ({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": IMAGE_DATA}}]}]},
      "user messages only"),
     ({"top_logprobs": 2}, "needs logprobs"),
     ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema.schema"),
     ({"seed": "7"}, "an integer")],
)
def test_request_refuses_inconsistent_fields(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        chat(**fields)


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, 404, "tool_choice"),
     ({"tools": [WEATHER, WEATHER]}, 409, "tools"),
     ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "r"}]}, 404,
      "messages.1.tool_call_id")],
)
def test_names_that_refer_to_nothing_are_refused_at_submission(fields: dict[str, Any], status: int,
                                                               param: str) -> None:
    with pytest.raises(RequestError) as raised:
        check_request_options(partner("openai"), chat(**fields).to_submission("openai"))
    assert (raised.value.status_code, raised.value.param) == (status, param)


def test_anthropic_refuses_tools_with_structured_output_up_front() -> None:
    fields = {"tools": [WEATHER], "response_format": {"type": "json_object"}}
    with pytest.raises(RequestError) as raised:
        check_request_options(partner("anthropic"), chat(**fields).to_submission("anthropic"))
    assert (raised.value.status_code, raised.value.param) == (400, "response_format")
    check_request_options(partner("openai"), chat(**fields).to_submission("openai"))  # OpenAI does both


# --- redaction of tool turns --------------------------------------------------------------------------


def test_tool_arguments_and_results_are_redacted_and_calls_restored() -> None:
    redactor = Redactor.for_policy(RedactionPolicy())
    placeholders, counts = PlaceholderMap(), Counter[str]()
    call = {"id": "c", "type": "function", "function": {"name": "send", "arguments": '{"to": "bob@example.org"}'}}
    turns = [Message.model_validate({"role": "assistant", "content": None, "tool_calls": [call]}),
             Message(role="tool", tool_call_id="c", content="sent to bob@example.org"),
             Message(role="user", content=[TextPart(type="text", text="and ann@example.org"), IMAGE_TURN.images()[0]])]
    out = [redact_message(redactor, m, placeholders, "", counts) for m in turns]
    sent = json.dumps([m.stored() for m in out])
    assert "@example.org" not in sent
    assert json.loads(out[0].tool_calls[0].function.arguments) == {"to": "<EMAIL_ADDRESS_1>"}  # type: ignore[index]
    assert out[2].images() == IMAGE_TURN.images()[:1]  # images pass as they are
    assert counts == {"EMAIL_ADDRESS": 3}
    restored = restore_tool_calls(out[0].tool_calls, lambda text: redactor.restore(text, placeholders))
    assert restored is not None and json.loads(restored[0].function.arguments) == {"to": "bob@example.org"}


def test_a_policy_can_refuse_images() -> None:
    redactor = Redactor.for_policy(RedactionPolicy(allow_images=False))
    with pytest.raises(RedactionError, match="refuses images"):
        redact_message(redactor, IMAGE_TURN, PlaceholderMap(), "", Counter())


# --- the simulator answers tool calls, as each SDK reads them -----------------------------------------


def test_openai_route_answers_a_tool_call_then_text(sim: str) -> None:  # noqa: F811
    client = openai_sdk(sim)
    first = client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "Paris"}],
                                           tools=[WEATHER])  # type: ignore[list-item]
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls or []
    assert call.type == "function" and json.loads(call.function.arguments) == {"city": "Paris"}
    second = client.chat.completions.create(model="sim-gpt", tools=[WEATHER], messages=[  # type: ignore[list-item]
        {"role": "user", "content": "Paris"}, first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "21C"}])
    assert (second.choices[0].finish_reason, second.choices[0].message.content) == (
        "stop", "Simulated reply from sim-openai: the tool said 21C")
    raw = post(sim, "/sim-openai/v1/chat/completions", {"model": "sim-gpt", "tools": [WEATHER],
               "messages": [{"role": "user", "content": "Paris"}]}, {"authorization": "Bearer k"})
    assert unknown_fields(ChatCompletion.model_validate(raw)) == []


def test_openai_route_honours_stop_and_max_tokens(sim: str) -> None:  # noqa: F811
    client = openai_sdk(sim)
    stopped = client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "a STOP b"}],
                                             stop=["STOP"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == (
        "Simulated reply from sim-openai: a ", "stop")
    cut = client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "x" * 200}],
                                         max_tokens=5)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Simulated reply from", "length")
    none = client.chat.completions.create(model="sim-gpt", messages=[{"role": "user", "content": "Paris"}],
                                          tools=[WEATHER], tool_choice="none")  # type: ignore[list-item]
    assert none.choices[0].finish_reason == "stop" and not none.choices[0].message.tool_calls


def test_anthropic_route_answers_tool_use_then_text(sim: str) -> None:  # noqa: F811
    client = anthropic_sdk(sim)
    tool = {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
    first = client.messages.create(model="sim-claude", max_tokens=50, tools=[tool],  # type: ignore[list-item]
                                   messages=[{"role": "user", "content": "Paris"}])
    assert first.stop_reason == "tool_use"
    [block] = first.content
    assert block.type == "tool_use" and block.input == {"city": "Paris"}
    assert unknown_fields(first) == []
    second = client.messages.create(model="sim-claude", max_tokens=50, tools=[tool], messages=[  # type: ignore[list-item]
        {"role": "user", "content": "Paris"}, {"role": "assistant", "content": [block.model_dump()]},  # type: ignore[list-item]
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "21C"}]}])
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text.endswith("the tool said 21C")
    stopped = client.messages.create(model="sim-claude", max_tokens=50, stop_sequences=["STOP"],
                                     messages=[{"role": "user", "content": "a STOP b"}])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "STOP")
    AnthropicMessage.model_validate(stopped.model_dump())


def test_gemini_route_answers_a_function_call_then_text(sim: str) -> None:  # noqa: F811
    client = gemini_sdk(sim)
    declaration = genai_types.FunctionDeclaration(name="get_weather",
                                                  parameters_json_schema=WEATHER["function"]["parameters"])  # type: ignore[index]
    config = genai_types.GenerateContentConfig(tools=[genai_types.Tool(function_declarations=[declaration])])
    first = client.models.generate_content(model="sim-gemini-flash", contents="Paris", config=config)
    [call] = first.function_calls or []
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    contents = [genai_types.Content(role="user", parts=[genai_types.Part(text="Paris")]),
                first.candidates[0].content,  # type: ignore[index]
                genai_types.Content(role="user", parts=[genai_types.Part.from_function_response(
                    name="get_weather", response={"celsius": 21})])]
    second = client.models.generate_content(model="sim-gemini-flash", contents=contents, config=config)  # type: ignore[arg-type]
    assert second.text == 'Simulated reply from sim-gemini: the tool said {"celsius":21}'
    cut = client.models.generate_content(model="sim-gemini-flash", contents="y" * 200,
                                         config=genai_types.GenerateContentConfig(max_output_tokens=5))
    assert cut.candidates and cut.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS

