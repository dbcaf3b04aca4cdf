"""The parts of an OpenAI chat request beyond plain text messages: content parts (text, images), tool definitions,
tool calls, the tool choice, the response format and the sampling options.

They are fedgate's own types (what a job stores and an adapter maps onto its partner's wire format), shaped as
OpenAI's so the OpenAI-compatible door passes them through unchanged. This module imports nothing from the rest
of fedgate: gateway_core.jobs.models builds its Message on it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Strict):
    url: str = Field(min_length=1, description="An http(s) URL or a data: URL (base64)")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    """An image: passed to partners that take images, never redacted; a partner's policy may refuse images."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str = Field(description="JSON text, as the model wrote it")


class ToolCall(_Strict):
    """A call the model asked for (OpenAI's `message.tool_calls[]`)."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="JSON Schema of the arguments")
    strict: bool | None = None


class ToolDefinition(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=FUNCTION_NAME)
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema the output must conform to")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={  # the rule below, in the published schema
        "if": {"properties": {"type": {"const": "json_schema"}}},
        "then": {"required": ["json_schema"], "properties": {"json_schema": {"type": "object"}}},
        "else": {"properties": {"json_schema": {"type": "null"}}},
    })

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only with it")
        return self


def _given(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": [field], "properties": {field: schema}}


# The rules between fields, stated in the published schema too (pydantic checks them below).
OPTION_RULES: Any = [
    {"if": _given("top_logprobs", {"type": "integer"}), "then": _given("logprobs", {"const": True})},
    {"if": _given("tool_choice", {"enum": ["auto", "required"]}),
     "then": _given("tools", {"type": "array", "minItems": 1})},
    {"if": _given("tool_choice", {"type": "object"}), "then": _given("tools", {"type": "array", "minItems": 1})},
]


def _json_number(value: Any) -> Any:
    if isinstance(value, str | bool):  # pydantic would coerce "0.5" and true
        raise ValueError(f"Input should be a JSON number, not {value!r}")
    return value


# A number kept to its JSON type; the bounds sit on the inner type, so the published schema states them.
_JSON_NUMBER = BeforeValidator(_json_number)


class ChatOptions(_Strict):
    """The request options a partner's adapter honours or refuses (never drops), stored encrypted with the job."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": OPTION_RULES})

    top_p: Annotated[float, Field(ge=0, le=1), _JSON_NUMBER] | None = None
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1,
                                                                  max_length=MAX_STOP_SEQUENCES)
    seed: Annotated[int, _JSON_NUMBER] | None = None  # 2.0 is an integer in JSON Schema; 2.5 and "2" are not
    presence_penalty: Annotated[float, Field(ge=-2, le=2), _JSON_NUMBER] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2), _JSON_NUMBER] | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, max_length=512)
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), _JSON_NUMBER] | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatOptions:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        # A tool_choice naming a function that is not in tools, and two tools of one name, are refused where the
        # job is submitted (404 / 409: gateway_core.jobs.request_checks), as a schema cannot state them.
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise ValueError(f"tool_choice {self.tool_choice!r} needs tools")
        return self

    def requested(self) -> list[str]:
        """The options this request sets, as their OpenAI field names (`response_format` only when not text)."""
        found = [name for name, value in self if value is not None]
        if self.response_format is not None and self.response_format.type == "text":
            found.remove("response_format")
        return found

    def is_empty(self) -> bool:
        return not any(value is not None for _, value in self)


def tool_choice_mode(choice: ToolChoice | None) -> str:
    """"auto", "none", "required", or the name of the one function the model must call."""
    if choice is None:
        return "auto"
    if isinstance(choice, NamedToolChoice):
        return choice.function.name
    return choice


_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 data: URL; None for any other URL."""
    found = _DATA_URL.match(url)
    return (found["media"], found["data"]) if found else None


def message_rules(null_content_role: str | None) -> Any:
    """The rules between a message's fields, for the published schema: tool_call_id on tool messages only,
    tool_calls on assistant messages only, images in user messages only; content may be null only in an assistant
    message with tool_calls (`null_content_role`), or never (None)."""
    role_is = lambda role: {"properties": {"role": {"const": role}}}  # noqa: E731
    text_only = {"anyOf": [{"type": "string"}, {"type": "null"},
                           {"type": "array", "items": {"properties": {"type": {"const": "text"}}}}]}
    rules: list[dict[str, Any]] = [
        {"if": role_is("tool"), "then": {"required": ["tool_call_id"], "properties": {"tool_call_id": {
            "type": "string"}}}, "else": {"properties": {"tool_call_id": {"type": "null"}}}},
        {"if": role_is("assistant"), "else": {"properties": {"tool_calls": {"type": "null"}}}},
        {"if": role_is("user"), "else": {"properties": {"content": text_only}}},
    ]
    if null_content_role is not None:
        rules.append({"if": {"properties": {"role": {"const": null_content_role}, "tool_calls": {"type": "array"}},
                             "required": ["tool_calls"]},
                      "else": {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}}})
    return rules
