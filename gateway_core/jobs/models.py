"""Jobs, their statuses and results."""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class JobSubmission(BaseModel):
    """What a producer sends: one inference request for one partner."""

    model_config = ConfigDict(extra="forbid")

    partner: str = Field(min_length=1, description="Partner name from the config")
    prompt: str | None = Field(default=None, description="A single user message; or give messages")
    messages: list[Message] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=100_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    contract: str | None = Field(
        default=None, description="Registered output contract the result must conform to: 'name' or 'name@version'"
    )
    webhook_url: str | None = Field(
        default=None, max_length=2048, description="Where to POST the finished job, signed (Standard Webhooks)"
    )

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


class JobView(BaseModel):
    """A job as shown to its tenant."""

    id: str
    status: JobStatus
    partner: str
    answered_by: str | None = None
    attempts: int
    output: str | None = None
    parsed: Any = Field(default=None, description="The output parsed and validated against the job's contract")
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

