"""Jobs, their statuses and results."""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway_core.jobs.chat_options import ChatOptions, ContentPart, ImagePart, TextPart, ToolCall, message_rules


class JobStatus(StrEnum):
    """Where a job is. A job that cannot succeed ends dead-lettered (an operator may replay it), so a client waiting
    for a job stops at succeeded, dead_lettered or cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.DEAD_LETTERED, JobStatus.CANCELLED})


# History entries that record something other than a call to a partner.
NOT_CALLS = frozenset({"redelivered", "breaker_open", "replayed", "swept"})


def since_last_replay(history: list[Attempt]) -> list[Attempt]:
    """The attempts that count for retries and fallbacks: an operator's replay starts afresh."""
    for index in range(len(history) - 1, -1, -1):
        if history[index].outcome == "replayed":
            return history[index + 1:]
    return history


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


# Input limits the request models state (and so the OpenAPI schema): what the API enforces, nothing more. The prompt's
# size is a setting (FEDGATE_MAX_PROMPT_CHARS): the API adds it to the published schema (gateway_api/openapi.py).
MAX_MESSAGES = 1000
MAX_TOKENS = 100_000
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
CONTRACT_REFERENCE = r"^[a-z0-9][a-z0-9._-]{0,63}(@(0*[1-9][0-9]{0,8}|latest))?$"



def json_type(expected: str) -> Any:
    """A before-validator keeping a field to its JSON type: a number is not taken from a string or a boolean (pydantic
    would coerce "5" and true), while 2.0 stays an integer as JSON Schema says it is."""

    def check(value: Any) -> Any:
        wrong = not isinstance(value, bool) if expected == "false" else isinstance(value, str | bool)
        if wrong:
            raise PydanticCustomError("type_error", "Input should be {expected}, not {given}",
                                      {"expected": expected, "given": repr(value)})
        return value

    return BeforeValidator(check)


# The constraints sit on the inner type, so the published schema shows them as JSON Schema's minimum and maximum.
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS), json_type("an integer")]
Temperature = Annotated[float, Field(ge=0, le=2), json_type("a number")]
JsonFalse = Annotated[Literal[False], json_type("false")]  # Literal[False] alone would take 0

Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_METADATA_KEY_CHARS)],
        Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE_CHARS)],
    ],
    Field(max_length=MAX_METADATA_KEYS, description=f"Up to {MAX_METADATA_KEYS} keys of 1-{MAX_METADATA_KEY_CHARS} "
          f"characters, values of up to {MAX_METADATA_VALUE_CHARS}; stored with the job, shown to its tenant"),
]


class Message(BaseModel):
    """One turn. `content` is text, or text and image parts in order (images in user turns only); an assistant
    turn may carry `tool_calls` (its content then may be empty), a `tool` turn answers one by `tool_call_id`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": message_rules(None)})

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ContentPart] = ""
    tool_calls: list[ToolCall] | None = Field(default=None, min_length=1)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("content", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @model_validator(mode="after")
    def _turn_shape(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        if self.role != "user" and self.images():
            raise ValueError("image parts are taken in user messages only")
        return self

    def text(self) -> str:
        """The message's text: its text parts joined (images left out)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def images(self) -> list[ImagePart]:
        return [] if isinstance(self.content, str) else [p for p in self.content if isinstance(p, ImagePart)]

    def size(self) -> int:
        """Characters counted against the prompt limit: text, tool call arguments (images are bounded by the
        request's size)."""
        return len(self.text()) + sum(len(call.function.arguments) for call in self.tool_calls or [])

    def stored(self) -> dict[str, Any]:
        """As stored and sent on: without the fields it does not use."""
        return self.model_dump(exclude_none=True)


class JobSubmission(BaseModel):
    """What a producer sends: one inference request for one partner."""

    model_config = ConfigDict(
        extra="forbid",
        # Exactly one of prompt and messages (a null counts as absent): stated in the schema, checked below.
        json_schema_extra={"oneOf": [
            {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
        ], "allOf": [{  # a contract, or a response_format: not both
            "if": {"required": ["contract"], "properties": {"contract": {"type": "string"}}},
            "then": {"properties": {"options": {"anyOf": [{"type": "null"}, {"properties": {"response_format": {
                "anyOf": [{"type": "null"}, {"properties": {"type": {"const": "text"}}}]}}}]}}},
        }]},
    )

    partner: str = Field(min_length=1, max_length=256, description="Partner name from the config")
    prompt: str | None = Field(default=None, min_length=1, description="A single user message; or give messages")
    messages: list[Message] | None = Field(
        default=None, min_length=1, max_length=MAX_MESSAGES, description="The conversation; or give prompt"
    )
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    metadata: Metadata = Field(default_factory=dict)
    contract: str | None = Field(
        default=None, max_length=80, pattern=CONTRACT_REFERENCE,
        description="Registered output contract the result must conform to: 'name' or 'name@version'",
    )
    stream: bool = Field(
        default=False, description="Relay the partner's answer as it is generated: follow it at "
        "GET /v1/jobs/{id}/stream",
    )
    webhook_url: str | None = Field(
        default=None, max_length=2048, pattern=r"^[hH][tT][tT][pP][sS]?://",
        description="Where to POST the finished job, signed (Standard Webhooks): an http(s) URL on a public "
        "address, or one the config's webhooks.allow lists",
    )
    options: ChatOptions | None = Field(
        default=None, description="OpenAI chat options (tools, tool_choice, response_format, stop, top_p, seed, ...): "
        "each honoured by the partner's adapter, or the job is refused with a 400 naming it",
    )

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> JobSubmission:
        if (self.prompt is None) == (self.messages is None):
            given = "both" if self.prompt is not None else "neither"
            raise ValueError(f"give exactly one of 'prompt' (a single user message) and 'messages' (a conversation), "
                             f"not {given}")
        if self.contract and self.options and "response_format" in self.options.requested():
            raise ValueError("give a contract or a response_format, not both")
        return self

    def conversation(self) -> list[Message]:
        if self.messages:
            return list(self.messages)
        return [Message(role="user", content=self.prompt or "")]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Attempt(BaseModel):
    """One call to one partner, with no prompt or output text."""

    partner: str
    attempt: int
    outcome: Literal["ok", "retryable", "fatal", "contract_violation", "redelivered", "breaker_open", "replayed",
                     "swept"]
    status_code: int | None = None
    error: str | None = None
    started_at: float
    duration_ms: float
    redactions: dict[str, int] | None = Field(
        default=None, description="Entity types and how many of each were redacted before this call (never values)"
    )


class EmbeddingsSummary(BaseModel):
    """What an embedding job's output holds (the vectors themselves are answered by /v1/embeddings)."""

    count: int
    dimensions: int


class JobView(BaseModel):
    """A job as shown to its tenant."""

    id: str
    kind: Literal["chat", "embedding"] = Field(default="chat", description="chat: a completion; embedding: vectors")
    status: JobStatus
    partner: str
    answered_by: str | None = None
    attempts: int
    output: str | None = None
    parsed: Any = Field(default=None, description="The output parsed and validated against the job's contract")
    embeddings: EmbeddingsSummary | None = Field(default=None, description="An embedding job's vectors: how many, "
                                                 "of what size (never the vectors, never in `output`)")
    contract: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = Field(
        default=None, description="Spend on every partner call this job made (repairs, failed-over calls included); "
        "None when no partner it reached has prices"
    )
    error: str | None = None
    history: list[Attempt] = Field(default_factory=list)
    redaction_audit: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Per partner that received the job: entity types and counts redacted"
    )
    payload_retained: bool = Field(default=True, description="False once the retention policy removed the payload")
    metadata: dict[str, str] = Field(default_factory=dict)
    finish_reason: str | None = Field(default=None, description="Why the partner stopped: stop, length, tool_calls "
                                      "or content_filter")
    tool_calls: list[ToolCall] | None = Field(default=None, description="The calls the model asked for, placeholders "
                                              "restored")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


def chat_completion(
    job_id: str, *, model: str, text: str, usage: Usage | None, created_at: float, answered_by: str | None,
    finish_reason: str | None = None, tool_calls: list[ToolCall] | None = None, logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A finished job as the `chat.completion` object OpenAI's /v1/chat/completions answers with: the
    OpenAI-compatible endpoint's answer and each line of a batch's output file."""
    usage = usage or Usage()
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [call.model_dump() for call in tool_calls]
        message["content"] = text or None
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": int(created_at),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "system_fingerprint": f"fedgate-{answered_by}",
    }


def now() -> float:
    return time.time()

