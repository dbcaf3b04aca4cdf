"""Jobs, their statuses and results."""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError


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
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class JobSubmission(BaseModel):
    """What a producer sends: one inference request for one partner."""

    model_config = ConfigDict(
        extra="forbid",
        # Exactly one of prompt and messages (a null counts as absent): stated in the schema, checked below.
        json_schema_extra={"oneOf": [
            {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
        ]},
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

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> JobSubmission:
        if (self.prompt is None) == (self.messages is None):
            given = "both" if self.prompt is not None else "neither"
            raise ValueError(f"give exactly one of 'prompt' (a single user message) and 'messages' (a conversation), "
                             f"not {given}")
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
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


def chat_completion(
    job_id: str, *, model: str, text: str, usage: Usage | None, created_at: float, answered_by: str | None
) -> dict[str, Any]:
    """A finished job as the `chat.completion` object OpenAI's /v1/chat/completions answers with: the
    OpenAI-compatible endpoint's answer and each line of a batch's output file."""
    usage = usage or Usage()
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": int(created_at),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
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

