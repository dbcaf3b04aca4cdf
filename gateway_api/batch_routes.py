"""The OpenAI Files and Batch API shape (`/v1/files`, `/v1/batches`), for the official SDK unchanged.

A batch's lines become ordinary jobs (redacted, budgeted, retried, failed over); see gateway_core/jobs/batches.py.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from gateway_api.deps import Tenant, services
from gateway_core.errors import RequestError
from gateway_core.jobs.batches import DEFAULT_MAX_FILE_BYTES, BatchStore

router = APIRouter(tags=["batches"])
_READ_CHUNK = 1024 * 1024
_MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file


def max_file_bytes() -> int:
    return int(os.environ.get("FEDGATE_MAX_BATCH_FILE_BYTES", DEFAULT_MAX_FILE_BYTES))


def batch_store(request: Request) -> BatchStore:
    state = request.app.state
    existing: BatchStore | None = getattr(state, "batches", None)
    if existing is None:
        svc = services(request)
        existing = BatchStore(svc.store, svc.producer, max_file_bytes=max_file_bytes())
        state.batches = existing
    return existing


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


@router.post("/v1/files")
async def upload_file(request: Request, who: Tenant) -> dict[str, Any]:
    """Multipart upload: `file` and `purpose` ("batch")."""
    batches = batch_store(request)
    limit = batches.max_file_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
        raise RequestError(400, f"the upload is {declared} bytes; the file limit is {limit}: split it",
                           "file_too_large", "file")
    form = await request.form(max_files=1, max_fields=16)
    try:
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(purpose, str) or not purpose:
            raise RequestError(400, "give a 'purpose' field (\"batch\")", "missing_purpose", "purpose")
        if not isinstance(upload, UploadFile):
            raise RequestError(400, "give the file as the multipart field 'file'", "missing_file", "file")
        parts: list[bytes] = []
        size = 0
        while chunk := await upload.read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise RequestError(400, f"the file is over the {limit} byte limit: split it", "file_too_large", "file")
            parts.append(chunk)
        info = await batches.create_file(who.name, upload.filename or "upload.jsonl", purpose, b"".join(parts))
    finally:
        await form.close()
    return info.as_openai()


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request, who: Tenant) -> dict[str, Any]:
    info = await batch_store(request).get_file(who.name, file_id)
    if info is None:
        raise RequestError(404, f"no file {file_id!r} for this tenant", "file_not_found", "file_id")
    return info.as_openai()


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request, who: Tenant) -> Response:
    content = await batch_store(request).file_content(who.name, file_id)
    if content is None:
        raise RequestError(404, f"no file {file_id!r} for this tenant", "file_not_found", "file_id")
    return Response(content, media_type="application/octet-stream")


@router.post("/v1/batches")
async def create_batch(body: BatchCreate, request: Request, who: Tenant) -> dict[str, Any]:
    # Refusals are RequestErrors: the app answers them in the OpenAI error shape.
    return await batch_store(request).create_batch(who, body.input_file_id, body.endpoint,
                                                   body.completion_window, body.metadata)


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(batch_id: str, request: Request, who: Tenant) -> dict[str, Any]:
    view = await batch_store(request).get_batch(who.name, batch_id)
    if view is None:
        raise RequestError(404, f"no batch {batch_id!r} for this tenant", "batch_not_found", "batch_id")
    return view


@router.get("/v1/batches")
async def list_batches(
    request: Request,
    who: Tenant,
    after: Annotated[str | None, Query(description="A batch id: list the batches created before it")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    data, has_more = await batch_store(request).list_batches(who.name, after, limit)
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, who: Tenant) -> dict[str, Any]:
    view = await batch_store(request).cancel_batch(who.name, batch_id)
    if view is None:
        raise RequestError(404, f"no batch {batch_id!r} for this tenant", "batch_not_found", "batch_id")
    return view


def install(app: FastAPI) -> None:
    app.include_router(router)
