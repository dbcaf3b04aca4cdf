"""The OpenAI Files and Batch API shape (`/v1/files`, `/v1/batches`), for the official SDK unchanged.

A batch's lines become ordinary jobs (redacted, budgeted, retried, failed over); see gateway_core/jobs/batches.py.

Uploads are read as they stream: the key is checked before the body (gateway_api/limits.py), the tenant's quota
(files and bytes kept) before the first byte, and the bytes are counted as they arrive, so an upload over the file
limit or over what the quota has left is refused there, without reading or spooling the rest.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from gateway_api.deps import Tenant, services
from gateway_api.limits import MULTIPART_SLACK
from gateway_api.openapi import errors
from gateway_core.errors import RequestError
from gateway_core.jobs.batches import COMPLETION_WINDOWS, ENDPOINTS, UPLOAD_PURPOSES, BatchStore
from gateway_core.jobs.models import Metadata

router = APIRouter(tags=["batches"])
_READ_CHUNK = 1024 * 1024
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file", "purpose"],
            "properties": {
                "file": {"type": "string",
                         "description": "UTF-8 JSONL, one request per line (FEDGATE_MAX_BATCH_FILE_BYTES at most)"},
                "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
            },
        }}},
    }
}


def batch_store(request: Request) -> BatchStore:
    state = request.app.state
    existing: BatchStore | None = getattr(state, "batches", None)
    if existing is None:
        svc = services(request)
        settings = svc.settings
        existing = BatchStore(
            svc.store, svc.producer, max_file_bytes=settings.max_batch_file_bytes,
            max_tenant_files=settings.max_files_per_tenant, max_tenant_bytes=settings.max_file_bytes_per_tenant,
            max_output_bytes=settings.max_batch_output_bytes,
        )
        state.batches = existing
    return existing


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=128, description="A file uploaded with purpose \"batch\"")
    endpoint: Literal["/v1/chat/completions", "/v1/embeddings"] = Field(description="The endpoint every line calls")
    completion_window: Literal["24h"] = "24h"
    metadata: Metadata | None = None

    @field_validator("endpoint", mode="before")
    @classmethod
    def _endpoint(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ENDPOINTS:  # OpenAI answers this 400, and so does fedgate
            raise PydanticCustomError("invalid_endpoint", "endpoint {given} is not supported: use {endpoint}",
                                      {"given": repr(value), "endpoint": " or ".join(map(repr, ENDPOINTS))})
        return value

    @field_validator("completion_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in COMPLETION_WINDOWS:
            raise PydanticCustomError("invalid_completion_window",
                                      "completion_window {given} is not supported: use \"24h\"", {"given": repr(value)})
        return value


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchLineError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchLineError]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                    "cancelled"]
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class _Counted:
    """The request body, counted as it arrives: it ends early (and `cut` is set) once it passes `cap` bytes."""

    def __init__(self, request: Request, cap: int) -> None:
        self.request = request
        self.cap = cap
        self.received = 0
        self.cut = False

    async def stream(self) -> AsyncGenerator[bytes, None]:
        async for chunk in self.request.stream():
            self.received += len(chunk)
            if self.received > self.cap:
                self.cut = True
                return
            yield chunk


@router.post("/v1/files", response_model=FileObject, openapi_extra=_UPLOAD_BODY, responses=errors(400, 403),
             summary="Upload a batch input file (multipart: file, purpose=batch)")
async def upload_file(request: Request, who: Tenant) -> dict[str, Any]:
    """Multipart upload: `file` and `purpose` ("batch")."""
    batches = batch_store(request)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise RequestError(400, "send the upload as multipart/form-data with the fields 'file' (the JSONL) and "
                                "'purpose' (\"batch\")", "invalid_upload", "file")
    files, used = await batches.file_usage(who.name)
    refusal = batches.quota_refusal(who.name, files, used, None)
    if refusal is not None:
        raise refusal
    room = min(batches.max_file_bytes, batches.max_tenant_bytes - used)
    body = _Counted(request, room + MULTIPART_SLACK)
    parser = MultiPartParser(request.headers, body.stream(), max_files=1, max_fields=16,
                             max_part_size=room + MULTIPART_SLACK)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if not body.cut:
            raise RequestError(400, f"the multipart form could not be read ({exc.message}): send the fields 'file' "
                                    "and 'purpose'", "invalid_upload", "file") from None
        form = None
    try:
        if body.cut:
            raise _over(batches, who.name, room, files, used)
        assert form is not None
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(purpose, str) or not purpose:
            raise RequestError(400, "give a 'purpose' field (\"batch\")", "missing_purpose", "purpose")
        if isinstance(upload, str):  # a part without a filename arrives as a form field: its text is the file
            content = upload.encode()
            if len(content) > room:
                raise _over(batches, who.name, room, files, used)
            info = await batches.create_file(who.name, "upload.jsonl", purpose, content)
            return info.as_openai()
        if not isinstance(upload, UploadFile):
            raise RequestError(400, "give the file as the multipart field 'file'", "missing_file", "file")
        parts: list[bytes] = []
        size = 0
        while chunk := await upload.read(_READ_CHUNK):
            size += len(chunk)
            if size > room:
                raise _over(batches, who.name, room, files, used)
            parts.append(chunk)
        info = await batches.create_file(who.name, upload.filename or "upload.jsonl", purpose, b"".join(parts))
    finally:
        if form is not None:
            await form.close()
    return info.as_openai()


def _over(batches: BatchStore, tenant: str, room: int, files: int, used: int) -> RequestError:
    """The refusal for an upload past `room` bytes: the file limit, or the tenant's quota if that left less."""
    if room < batches.max_file_bytes:
        refusal = batches.quota_refusal(tenant, files, used, room + 1)
        if refusal is not None:
            return refusal
    return RequestError(413, f"the file is over the {batches.max_file_bytes} byte limit "
                             "(FEDGATE_MAX_BATCH_FILE_BYTES): split it", "file_too_large", "file")


@router.get("/v1/files", response_model=FileList, summary="List the tenant's files (uploads and batch outputs)")
async def list_files(
    request: Request,
    who: Tenant,
    purpose: Annotated[str | None, Query(max_length=64, description="Only files with this purpose "
                                         "(batch, batch_output)")] = None,
    after: Annotated[str | None, Query(max_length=64, description="A file id: list the files after it")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation time")] = "desc",
) -> FileList:
    """Only the calling tenant's own files; expired and deleted ones are gone from the list."""
    found, has_more = await batch_store(request).list_files(who.name, purpose=purpose, after=after, limit=limit,
                                                             newest_first=order == "desc")
    data = [FileObject(**info.as_openai()) for info in found]
    return FileList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                    has_more=has_more)


@router.get("/v1/files/{file_id}", response_model=FileObject, responses=errors(404))
async def retrieve_file(file_id: str, request: Request, who: Tenant) -> dict[str, Any]:
    info = await batch_store(request).get_file(who.name, file_id)
    if info is None:
        raise RequestError(404, f"no file {file_id!r} for this tenant", "file_not_found", "file_id")
    return info.as_openai()


@router.delete("/v1/files/{file_id}", response_model=FileDeleted, responses=errors(404),
               summary="Delete a file (an upload's place in the tenant's quota is freed)")
async def delete_file(file_id: str, request: Request, who: Tenant) -> FileDeleted:
    if not await batch_store(request).delete_file(who.name, file_id):
        raise RequestError(404, f"no file {file_id!r} for this tenant", "file_not_found", "file_id")
    return FileDeleted(id=file_id, deleted=True)


@router.get("/v1/files/{file_id}/content", responses={
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "The file's bytes (JSONL)"},
    **errors(404),
})
async def file_content(file_id: str, request: Request, who: Tenant) -> Response:
    content = await batch_store(request).file_content(who.name, file_id)
    if content is None:
        raise RequestError(404, f"no file {file_id!r} for this tenant", "file_not_found", "file_id")
    return Response(content, media_type="application/octet-stream")


@router.post("/v1/batches", response_model=BatchObject, responses=errors(400, 402, 403, 404))
async def create_batch(body: BatchCreate, request: Request, who: Tenant) -> dict[str, Any]:
    # Refusals are RequestErrors: the app answers them in the OpenAI error shape.
    return await batch_store(request).create_batch(who, body.input_file_id, body.endpoint,
                                                   body.completion_window, body.metadata)


@router.get("/v1/batches/{batch_id}", response_model=BatchObject, responses=errors(404))
async def retrieve_batch(batch_id: str, request: Request, who: Tenant) -> dict[str, Any]:
    view = await batch_store(request).get_batch(who.name, batch_id)
    if view is None:
        raise RequestError(404, f"no batch {batch_id!r} for this tenant", "batch_not_found", "batch_id")
    return view


@router.get("/v1/batches", response_model=BatchList)
async def list_batches(
    request: Request,
    who: Tenant,
    after: Annotated[str | None, Query(description="A batch id: list the batches created before it")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    data, has_more = await batch_store(request).list_batches(who.name, after, limit)
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject, responses=errors(404, 409))
async def cancel_batch(batch_id: str, request: Request, who: Tenant) -> dict[str, Any]:
    view = await batch_store(request).cancel_batch(who.name, batch_id)
    if view is None:
        raise RequestError(404, f"no batch {batch_id!r} for this tenant", "batch_not_found", "batch_id")
    return view


def install(app: FastAPI) -> None:
    app.include_router(router)
