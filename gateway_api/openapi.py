"""What the published OpenAPI schema says beyond the route signatures: the error shape every refusal has, the
statuses each operation can answer, and the limits that come from settings rather than from the models."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from gateway_core.settings import Settings


class ErrorDetail(BaseModel):
    message: str = Field(description="What was wrong and what to do")
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error, insufficient_quota")
    param: str | None = Field(default=None, description="The field or parameter at fault, when there is one")
    code: str | None = Field(default=None, description="A stable machine-readable code, e.g. job_not_found")


class ErrorResponse(BaseModel):
    """Every refusal, in OpenAI's error shape (the `openai` SDK shows `error.message`)."""

    error: ErrorDetail


_WHY = {
    400: "The request cannot be served as sent (the message says why)",
    401: "Missing or unknown API key (checked before the body is read)",
    402: "The tenant is over a spend cap (insufficient_quota); nothing was stored",
    403: "The key's tenant may not do this (admin only, partner not allowed, or a quota reached)",
    404: "No such resource for this tenant",
    409: "Conflicts with the resource's state",
    410: "Gone: the resource expired",
    413: "The request body, a file or a prompt is over its limit",
    422: "The request does not match the schema, or names something that cannot be used; the message names the field",
    502: "The partner chain failed the job (the job id is in x-fedgate-job-id)",
    503: "The job store or broker is unreachable for a moment; retry (nothing was changed)",
    504: "The job is still running after the wait; poll GET /v1/jobs/{id}",
}

# Every operation can answer these: the key is checked on every /v1 route, any body can be unreadable or too large,
# any parameter can be invalid, and the store can be away for a moment.
COMMON = (400, 401, 413, 422, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the statuses it can refuse with, each with the error body's schema."""
    return {status: {"model": ErrorResponse, "description": _WHY[status]} for status in statuses}


def install(app: FastAPI, settings: Settings) -> None:
    """Publish settings-dependent limits in the schema: the prompt's size (FEDGATE_MAX_PROMPT_CHARS)."""

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI's own, which keeps it in app.openapi_schema
            _state_prompt_limit(schema.get("components", {}).get("schemas", {}), settings.max_prompt_chars)
            return schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _state_prompt_limit(schemas: dict[str, Any], max_chars: int) -> None:
    note = f"; at most {max_chars} characters over the whole conversation (FEDGATE_MAX_PROMPT_CHARS, else 413)"
    for name, field in (("JobSubmission", "prompt"), ("Message", "content"), ("ChatMessage", "content")):
        prop = schemas.get(name, {}).get("properties", {}).get(field)
        if prop is None:
            continue
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "string":
                branch["maxLength"] = max_chars
        prop["description"] = (prop.get("description") or "The text") + note
