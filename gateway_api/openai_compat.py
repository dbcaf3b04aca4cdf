"""OpenAI-compatible front door: apps using the official `openai` SDK change only base_url and api key.

`POST /v1/chat/completions` turns the request into an ordinary job (redacted, budgeted,
retried, failed over, visible at /v1/jobs/{id}), waits for it, and answers in OpenAI's response and error
shapes; with `stream: true` it answers server-sent chunks as the job's worker relays them (gateway_api/streaming.py).
`model` names a partner, or a route from the config.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from gateway_api import streaming
from gateway_api.deps import Tenant, error_body, services, wait_for_job
from gateway_api.openapi import errors
from gateway_core.errors import RequestError
from gateway_core.jobs.chat_options import ToolCall
from gateway_core.jobs.chat_request import ChatCompletionRequest  # also what batch input lines are read as
from gateway_core.jobs.models import JobStatus, chat_completion

router = APIRouter(tags=["openai-compatible"])


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's `chat.completion` object."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


def _partner_for(model: str, request: Request) -> str:
    config = services(request).config
    return config.routes.get(model, model)


@router.post("/v1/chat/completions", responses={200: {"model": ChatCompletion}, **errors(402, 403, 404, 502, 504)})
async def chat_completions(body: ChatCompletionRequest, request: Request, who: Tenant) -> Response:
    svc = services(request)
    partner = _partner_for(body.model, request)
    if partner not in svc.config.partners:
        known = ", ".join(sorted([*svc.config.partners, *svc.config.routes]))
        raise RequestError(404, f"the model {body.model!r} does not exist here: use one of {known}", "model_not_found",
                       "model")
    try:
        submission = body.to_submission(partner)
    except ValidationError as exc:  # the two request models disagree: say so rather than answer a 500
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise RequestError(400, f"{where}: {first.get('msg')}", "invalid_request", where) from None
    if body.stream:  # server-sent chunks relayed from the partner's stream through the job (gateway_api/streaming.py)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await streaming.stream_chat_completion(request, who, submission, body.model, include_usage)
    accepted = await svc.producer.submit(who, submission)
    record = await wait_for_job(svc, accepted.id, svc.settings.chat_timeout_s)
    headers = {"x-fedgate-job-id": accepted.id}
    if record is None or not record.status.terminal:
        return JSONResponse(
            error_body(f"the job {accepted.id} is still running after {svc.settings.chat_timeout_s:g}s; "
                       f"poll GET /v1/jobs/{accepted.id}", "timeout", status=504),
            status_code=504, headers=headers,
        )
    if record.status is not JobStatus.SUCCEEDED or record.output is None:
        return JSONResponse(
            error_body(f"job {record.id} {record.status.value}: {record.error or 'no output'}", "partner_failed",
                       status=502),
            status_code=502, headers=headers,
        )
    completion = chat_completion(record.id, model=body.model, text=record.output, usage=record.usage,
                                 created_at=record.created_at, answered_by=record.answered_by,
                                 finish_reason=record.finish_reason, tool_calls=record.tool_calls,
                                 logprobs=record.logprobs)
    return JSONResponse(completion, headers=headers)


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, who: Tenant) -> dict[str, Any]:
    config = services(request).config
    allowed = who.partners
    names = [p for p in config.partners if allowed is None or p in allowed]
    names += [r for r, p in config.routes.items() if allowed is None or p in allowed]
    now = int(time.time())
    return {"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "fedgate"}
                                       for n in names]}


def install(app: FastAPI) -> None:
    app.include_router(router)
    streaming.install(app)  # GET /v1/jobs/{id}/stream
