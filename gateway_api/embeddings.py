"""`POST /v1/embeddings`, OpenAI-compatible: the request becomes an embedding job (redacted, budgeted, retried, failed
over, metered, visible at /v1/jobs/{id}), the API waits for it as /v1/chat/completions does and answers OpenAI's
`CreateEmbeddingResponse`, with the vectors as float lists or, as the `openai` SDK asks by default, base64."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway_api.deps import Tenant, error_body, services, wait_for_job
from gateway_api.openapi import errors
from gateway_core.jobs.embedding_request import EmbeddingRequest, embedding_list, embedding_partner, encoded
from gateway_core.jobs.models import JobStatus
from gateway_core.jobs.store import EMBEDDING

router = APIRouter(tags=["openai-compatible"])


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    """OpenAI's `CreateEmbeddingResponse`."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


@router.post("/v1/embeddings", responses={200: {"model": EmbeddingList}, **errors(402, 403, 404, 502, 504)})
async def create_embeddings(body: EmbeddingRequest, request: Request, who: Tenant) -> JSONResponse:
    svc = services(request)
    partner = embedding_partner(svc.config, body)
    accepted = await svc.producer.submit(who, body.submission(partner), kind=EMBEDDING, params=body.params())
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
    prompt_tokens = record.usage.prompt_tokens if record.usage else 0
    answer = embedding_list(encoded(record.output, body.encoding_format), model=body.model,
                            prompt_tokens=prompt_tokens)
    return JSONResponse(answer, headers=headers)


def install(app: FastAPI) -> None:
    app.include_router(router)
