"""The JSON body of a delivery: the finished job as its tenant sees it, never the prompt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from gateway_core.jobs.models import JobStatus, JobView

EventType = Literal["job.succeeded", "job.dead_lettered", "job.cancelled"]
EVENT_FOR_STATUS: dict[JobStatus, EventType] = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.DEAD_LETTERED: "job.dead_lettered",
    JobStatus.CANCELLED: "job.cancelled",
}
# Job fields that must never leave in a webhook (the prompt and anything derived from it).
NEVER_SENT = frozenset({"prompt", "messages", "placeholder_map", "placeholders", "redacted_prompt", "input"})


class WebhookEvent(BaseModel):
    """The JSON body of a delivery: the job as its tenant sees it (output included), never the prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: EventType
    timestamp: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    data: dict[str, Any]

    @field_validator("data")
    @classmethod
    def _no_prompt(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in value.items() if k not in NEVER_SENT}

    @classmethod
    def for_job(cls, view: JobView) -> WebhookEvent:
        event_type = EVENT_FOR_STATUS.get(view.status)
        if event_type is None:
            raise ValueError(f"job {view.id} is {view.status.value}: webhooks are sent for finished jobs only")
        return cls(type=event_type, data=view.model_dump(mode="json"))

    def body(self) -> bytes:
        return self.model_dump_json().encode()


def job_message_id(job_id: str, event_type: str) -> str:
    """A deterministic webhook id for a job's event, so a re-run notify stage sends the same message again."""
    return f"msg_{job_id}_{event_type.replace('.', '_')}"
