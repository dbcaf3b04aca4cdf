"""The OpenAI chat completions request, as fedgate reads it: the HTTP API's /v1/chat/completions body and each
line of a batch input file (gateway_core.jobs.batches) are validated against the same model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gateway_core.jobs.models import MAX_MESSAGES, JsonFalse, MaxTokens, Message, Metadata, Temperature, json_type


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


class ChatCompletionRequest(BaseModel):
    """The fields fedgate honours; any other field is refused with a 422 that names it (nothing silently dropped)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, description="A partner name or a route from the config")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    n: Annotated[int, Field(ge=1, le=1), json_type("an integer")] = Field(default=1, description="Only 1 is supported")
    stream: JsonFalse = Field(default=False, description="Only false: streaming is not supported yet")
    metadata: Metadata | None = None

    @field_validator("stream", mode="before")
    @classmethod
    def _no_streaming(cls, value: Any) -> Any:
        if value is True:  # the API answers a 400 "unsupported" for this error type, as OpenAI does
            raise PydanticCustomError("unsupported",
                                      "stream=true is not supported by this gateway yet: send stream=false")
        return value
