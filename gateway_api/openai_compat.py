"""OpenAI-compatible front door: apps using the official `openai` SDK change only base_url and api key.

`POST /v1/chat/completions` (non-streaming) turns the request into an ordinary job (redacted, budgeted,
retried, failed over, visible at /v1/jobs/{id}), waits for it, and answers in OpenAI's response and error
shapes. `model` names a partner, or a route from the config.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from gateway_api.deps import Tenant, error_body, services, wait_for_job
from gateway_core.errors import RequestError
from gateway_core.jobs.chat_request import ChatCompletionRequest  # also what batch input lines are read as
from gateway_core.jobs.models import JobStatus, JobSubmission, chat_completion

router = APIRouter(tags=["openai-compatible"])


def _partner_for(model: str, request: Request) -> str:
    config = services(request).config
    return config.routes.get(model, model)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, who: Tenant) -> JSONResponse:
    if body.stream:
        raise RequestError(400, "stream=true is not supported by this gateway yet: send stream=false", "unsupported",
                       "stream")
    svc = services(request)
    partner = _partner_for(body.model, request)
    if partner not in svc.config.partners:
        known = ", ".join(sorted([*svc.config.partners, *svc.config.routes]))
        raise RequestError(404, f"the model {body.model!r} does not exist here: use one of {known}", "model_not_found",
                       "model")
    submission = JobSubmission(
        partner=partner,
        messages=[m.as_message() for m in body.messages],
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        metadata=dict(body.metadata or {}),
    )
    accepted = await svc.producer.submit(who, submission)
    record = await wait_for_job(svc, accepted.id, svc.settings.chat_timeout_s)
    headers = {"x-fedgate-job-id": accepted.id}
    if record is None or not record.status.terminal:
        return JSONResponse(
            error_body(f"the job {accepted.id} is still running after {svc.settings.chat_timeout_s:g}s; "
                       f"poll GET /v1/jobs/{accepted.id}", "timeout"),
            status_code=504, headers=headers,
        )
    if record.status is not JobStatus.SUCCEEDED or record.output is None:
        return JSONResponse(
            error_body(f"job {record.id} {record.status.value}: {record.error or 'no output'}", "partner_failed"),
            status_code=502, headers=headers,
        )
    completion = chat_completion(record.id, model=body.model, text=record.output, usage=record.usage,
                                 created_at=record.created_at, answered_by=record.answered_by)
    return JSONResponse(completion, headers=headers)


@router.get("/v1/models")
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
