"""The OpenAI chat completions request, as fedgate reads it: the HTTP API's /v1/chat/completions body and each
line of a batch input file (gateway_core.jobs.batches) are validated against the same model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from gateway_core.jobs.chat_options import (
    MAX_STOP_SEQUENCES,
    OPTION_RULES,
    ChatOptions,
    ContentPart,
    ImagePart,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolDefinition,
    message_rules,
)
from gateway_core.jobs.chat_options import TextPart as TextPart  # re-exported: the request's text part
from gateway_core.jobs.models import (
    MAX_MESSAGES,
    JobSubmission,
    MaxTokens,
    Message,
    Metadata,
    Temperature,
    json_type,
)

StopSequence = Annotated[str, Field(min_length=1)]
StopSequences = Annotated[list[StopSequence], Field(min_length=1, max_length=MAX_STOP_SEQUENCES)]
# The request fields that are chat options (ChatOptions), each honoured by the partner's adapter or refused.
OPTION_FIELDS = tuple(ChatOptions.model_fields)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": message_rules("assistant")})

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, min_length=1)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only in an assistant message with tool_calls)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        if isinstance(self.content, list) and self.role != "user" and any(
                isinstance(p, ImagePart) for p in self.content):
            raise ValueError(f"image_url parts are taken in user messages only, not in a {self.role} message")
        return self

    def as_message(self) -> Message:
        content = self.content or ""
        if isinstance(content, list) and all(not isinstance(p, ImagePart) for p in content):
            content = "".join(p.text for p in content if isinstance(p, TextPart))
        return Message(role="system" if self.role == "developer" else self.role, content=content,
                       tool_calls=self.tool_calls, tool_call_id=self.tool_call_id)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = Field(default=False, description="Send a last chunk with the usage (empty choices)")


# OpenAI refuses stream_options without stream: true; stated in the schema so generated requests respect it.
STREAM_OPTIONS_RULE: Any = {
    "if": {"required": ["stream_options"], "properties": {"stream_options": {"type": "object"}}},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}


class ChatCompletionRequest(BaseModel):
    """The fields fedgate honours; any other field is refused with a 400 that names it (nothing silently dropped).
    The chat options (tools, response_format, stop, top_p, seed, ...) are honoured by the partner's adapter or the
    request is refused with a 400 naming the field (gateway_core.jobs.request_checks)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "allOf": [*OPTION_RULES, STREAM_OPTIONS_RULE]})

    model: str = Field(min_length=1, max_length=256, description="A partner name or a route from the config")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    n: Annotated[int, Field(ge=1, le=1), json_type("an integer")] = Field(default=1, description="Only 1 is supported")
    stream: StrictBool = Field(default=False, description="Answer as server-sent `chat.completion.chunk` events, "
                               "relayed from the partner's own stream through the job")
    stream_options: StreamOptions | None = None
    metadata: Metadata | None = None
    top_p: Annotated[float, Field(ge=0, le=1), json_type("a number")] | None = None
    stop: StopSequence | StopSequences | None = Field(default=None,
                                                      description="Up to 4 sequences where the partner stops")
    seed: Annotated[int, json_type("an integer")] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2), json_type("a number")] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2), json_type("a number")] | None = None
    response_format: ResponseFormat | None = Field(
        default=None, description="text, json_object, or json_schema: the output is validated against the schema as "
        "an output contract is (a repair call where configured), and `parsed` is filled on the job")
    user: str | None = Field(default=None, max_length=512)
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), json_type("an integer")] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:  # OpenAI refuses this combination too
            raise PydanticCustomError("unsupported",
                                      "stream_options: only allowed when stream is true; remove it or set stream")
        return self

    _options: ChatOptions | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _options_consistent(self) -> ChatCompletionRequest:
        # Built once, here: tool_choice naming a tool that is not there, top_logprobs without logprobs, ... refused.
        given = self.model_dump(include=set(OPTION_FIELDS), exclude_none=True, by_alias=True)
        if isinstance(given.get("stop"), str):
            given["stop"] = [given["stop"]]
        options = ChatOptions.model_validate(given)
        self._options = None if options.is_empty() else options
        return self

    def options(self) -> ChatOptions | None:
        return self._options

    def to_submission(self, partner: str) -> JobSubmission:
        """The job this request is (raises pydantic's ValidationError where the two models disagree)."""
        return JobSubmission(
            partner=partner,
            messages=[m.as_message() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            metadata=dict(self.metadata or {}),
            options=self.options(),
            stream=self.stream,
        )
