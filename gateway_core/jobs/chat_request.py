"""The OpenAI chat completions request, as fedgate reads it: the HTTP API's /v1/chat/completions body and each
line of a batch input file (gateway_core.jobs.batches) are validated against the same model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from gateway_core.jobs.models import MAX_MESSAGES, MaxTokens, Message, Metadata, Temperature, json_type


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(description="Only text parts are supported")
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_message(self) -> Message:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return Message(role="system" if self.role == "developer" else self.role, content=text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = Field(default=False, description="Send a last chunk with the usage (empty choices)")


class ChatCompletionRequest(BaseModel):
    """The fields fedgate honours; any other field is refused with a 422 that names it (nothing silently dropped)."""

    model_config = ConfigDict(extra="forbid")

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

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:  # OpenAI refuses this combination too
            raise PydanticCustomError("unsupported",
                                      "stream_options: only allowed when stream is true; remove it or set stream")
        return self
