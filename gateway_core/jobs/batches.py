# mypy: disable-error-code="arg-type,union-attr,assignment,operator"
# (redis-py types every reply as bytes | str; these clients use decode_responses=True, so replies are str.)
"""Batches in the OpenAI Batch API shape: uploaded files, batch records, bulk enqueue, lazy finalisation.

- Files: `fg:file:{id}` hash with metadata and the content encrypted with the store cipher (it holds prompts), in
  pieces of at most FILE_CHUNK_CHARS characters (`content`, then `content:1`, `content:2`, ...; `parts` says how
  many), so no Redis value grows with the file. Uploads count against the tenant's quota (files and bytes kept at
  once): `fg:files:{tenant}` a zset of file ids by expiry, `fg:files:{tenant}:bytes` their sizes
  (lua/file_quota_take.lua). A batch's output file stops at `max_output_bytes`; the results past it go to the
  error file, each naming the job that still holds it.
- Batches: `fg:batch:{id}` hash; `fg:batch:{id}:jobs` the job ids (a Redis list, in input order);
  `fg:batch:{id}:rejected` per-request errors found at creation (unknown model, partner not allowed, ...), which
  go to the error file without failing the batch; `fg:batches:{tenant}` a zset (score created_at) for listing.
- Creation validates every line before anything is written. Structural errors (malformed JSON, duplicate or
  missing custom_id, wrong method/url, an invalid body) fail the batch with errors by line number; nothing is
  enqueued then. Otherwise job hashes are written in pipelines of CHUNK, then the jobs are put into the delay
  queue due now (one ZADD per chunk): every worker's delay-queue mover sends them to their partner queues.
- Counts are computed at read time (a pipelined HMGET of the jobs' statuses); when every job is terminal the
  reader finalises: builds the output and error JSONL files and marks the batch completed (or cancelled).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gateway_core.config import TenantConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.errors import RequestError
from gateway_core.fleet import keys, metrics
from gateway_core.fleet.lua import script
from gateway_core.jobs import embedding_request, models
from gateway_core.jobs.chat_options import ToolCall
from gateway_core.jobs.chat_request import ChatCompletionRequest  # the exact request shape chat completions take
from gateway_core.jobs.models import JobStatus, JobSubmission, Usage, new_job_id, now
from gateway_core.jobs.store import (
    BATCH_KEY_PREFIX,
    CHAT,
    EMBEDDING,
    JobRecord,
    JobStore,
    delayed_member,
    partners_named,
    retention_of,
)
from gateway_core.tenants import spending

if TYPE_CHECKING:
    from gateway_core.jobs.submission import JobProducer

DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_TENANT_FILES = 100
DEFAULT_MAX_TENANT_FILE_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024 * 1024
FILE_CHUNK_CHARS = 256 * 1024  # at most 1 MiB of UTF-8 per stored piece
MAX_REQUESTS = 50_000
CHUNK = 1000
MAX_REPORTED_ERRORS = 1000
ENDPOINT = "/v1/chat/completions"
ENDPOINTS = (ENDPOINT, embedding_request.ENDPOINT)  # one per batch, as OpenAI requires
COMPLETION_WINDOWS = {"24h": 24 * 3600}
UPLOAD_PURPOSES = ("batch",)
FINALIZE_LOCK_S = 300
MAX_CUSTOM_ID = 512

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "cancelled", "expired")
_TERMINAL_JOB = {s.value for s in JobStatus if s.terminal}
_FILE_FIELDS = ("tenant", "filename", "purpose", "bytes", "created_at", "expires_at")
_RESULT_FIELDS = ("status", "output", "usage", "answered_by", "error", "created_at", "custom_id", "batch_model",
                  "payload_retained", "requested_partner", "partner", "history", "kind", "params", "finish_reason",
                  "tool_calls")


def file_key(file_id: str) -> str:
    return f"{keys.PREFIX}:file:{file_id}"


def tenant_files_key(tenant: str) -> str:
    return f"{keys.PREFIX}:files:{tenant}"


def tenant_file_bytes_key(tenant: str) -> str:
    return f"{keys.PREFIX}:files:{tenant}:bytes"


def tenant_file_list_key(tenant: str) -> str:
    """Every file the tenant has (uploads and batch outputs) scored by creation time: what GET /v1/files lists."""
    return f"{keys.PREFIX}:files:{tenant}:listed"


def _content_field(part: int) -> str:
    return "content" if part == 0 else f"content:{part}"


def batch_key(batch_id: str) -> str:
    return f"{BATCH_KEY_PREFIX}{batch_id}"


def batch_jobs_key(batch_id: str) -> str:
    return f"{keys.PREFIX}:batch:{batch_id}:jobs"


def batch_rejected_key(batch_id: str) -> str:
    return f"{keys.PREFIX}:batch:{batch_id}:rejected"


def batch_lock_key(batch_id: str) -> str:
    return f"{keys.PREFIX}:batch:{batch_id}:finalize"


def tenant_batches_key(tenant: str) -> str:
    return f"{keys.PREFIX}:batches:{tenant}"


@dataclass
class LineError:
    line: int | None
    code: str
    message: str
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass
class BatchLine:
    """One valid input line: a job to submit, or a request rejected up front (it goes to the error file)."""

    line: int
    custom_id: str
    model: str
    submission: JobSubmission | None = None
    kind: str = CHAT
    params: dict[str, Any] = field(default_factory=dict)  # an embedding line's (the chat params come from submission)
    reject_status: int = 0
    reject_code: str = ""
    reject_message: str = ""


@dataclass
class ParsedInput:
    lines: list[BatchLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0

    def add_error(self, error: LineError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)


def parse_input(
    text: str,
    *,
    tenant: TenantConfig,
    producer: JobProducer,
    endpoint: str = ENDPOINT,
    max_requests: int = MAX_REQUESTS,
) -> ParsedInput:
    """Validate every line of a batch input file. Structural errors are `errors` (the batch fails); requests the
    gateway refuses (unknown model, partner not allowed, prompt too large) are kept as rejected lines."""
    parsed = ParsedInput()
    seen: dict[str, int] = {}
    config = producer.config
    for number, raw_line in enumerate(text.splitlines(), start=1):
        if not raw_line.strip():
            continue
        if len(seen) >= max_requests:
            parsed.add_error(LineError(number, "too_many_requests",
                                       f"the file has more than {max_requests} requests: split it into batches"))
            break
        try:
            item = json.loads(raw_line)
        except json.JSONDecodeError as exc:
            parsed.add_error(LineError(number, "invalid_json", f"line {number} is not valid JSON: {exc.msg}"))
            continue
        if not isinstance(item, dict):
            parsed.add_error(LineError(number, "invalid_request", f"line {number} is not a JSON object"))
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            parsed.add_error(LineError(number, "invalid_custom_id",
                                       f"line {number}: custom_id must be a non-empty string of at most "
                                       f"{MAX_CUSTOM_ID} characters", "custom_id"))
            continue
        if custom_id in seen:
            parsed.add_error(LineError(number, "duplicate_custom_id",
                                       f"line {number}: custom_id {custom_id!r} was already used on line "
                                       f"{seen[custom_id]}; every request needs its own custom_id", "custom_id"))
            continue
        seen[custom_id] = number
        if item.get("method") != "POST":
            parsed.add_error(LineError(number, "invalid_method",
                                       f"line {number}: method must be \"POST\"", "method"))
            continue
        if item.get("url") != endpoint:
            parsed.add_error(LineError(number, "mismatched_url",
                                       f"line {number}: url {item.get('url')!r} does not match the batch's endpoint "
                                       f"{endpoint!r}", "url"))
            continue
        body = item.get("body")
        if not isinstance(body, dict):
            parsed.add_error(LineError(number, "invalid_body", f"line {number}: body must be a JSON object", "body"))
            continue
        if endpoint == embedding_request.ENDPOINT:
            _parse_embedding_line(parsed, number, custom_id, body, tenant, producer)
            continue
        try:
            request = ChatCompletionRequest.model_validate(body)
            if request.stream:
                raise ValueError("stream=true is not supported in a batch")
            submission = request.to_submission(config.routes.get(request.model, request.model))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            parsed.add_error(LineError(number, "invalid_body", f"line {number}: body.{where}: {first.get('msg')}",
                                       f"body.{where}"))
            continue
        except ValueError as exc:
            parsed.add_error(LineError(number, "invalid_body", f"line {number}: {exc}", "body"))
            continue
        entry = BatchLine(number, custom_id, request.model)
        if submission.partner not in config.partners:
            known = ", ".join(sorted([*config.partners, *config.routes]))
            entry.reject_status, entry.reject_code = 404, "model_not_found"
            entry.reject_message = f"the model {request.model!r} does not exist here: use one of {known}"
        else:
            try:
                producer.validate(tenant, submission)
                entry.submission = submission
            except RequestError as exc:
                entry.reject_status, entry.reject_code, entry.reject_message = exc.status_code, exc.code, str(exc)
        parsed.lines.append(entry)
    if not parsed.lines and not parsed.error_count:
        parsed.add_error(LineError(None, "empty_file", "the input file has no requests"))
    return parsed


def _parse_embedding_line(parsed: ParsedInput, number: int, custom_id: str, body: dict[str, Any],
                          tenant: TenantConfig, producer: JobProducer) -> None:
    """One /v1/embeddings line: a structural error in its body fails the batch; a request the gateway refuses
    (unknown model, a partner without embedding_model, ...) is a rejected line, as for chat lines."""
    try:
        request = embedding_request.EmbeddingRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        parsed.add_error(LineError(number, "invalid_body", f"line {number}: body.{where}: {first.get('msg')}",
                                   f"body.{where}"))
        return
    entry = BatchLine(number, custom_id, request.model, kind=EMBEDDING, params=request.params())
    try:
        submission = request.submission(embedding_request.embedding_partner(producer.config, request))
        producer.validate(tenant, submission)
        entry.submission = submission
    except RequestError as exc:
        entry.reject_status, entry.reject_code, entry.reject_message = exc.status_code, exc.code, str(exc)
    parsed.lines.append(entry)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _int_or_none(value: str | None) -> int | None:
    return int(float(value)) if value else None


@dataclass
class FileInfo:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    expires_at: float | None

    def as_openai(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "file", "bytes": self.bytes, "created_at": int(self.created_at),
            "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None,
            "expires_at": int(self.expires_at) if self.expires_at else None,
        }


class BatchStore:
    def __init__(self, store: JobStore, producer: JobProducer, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 ttl_s: int | None = None, max_tenant_files: int = DEFAULT_MAX_TENANT_FILES,
                 max_tenant_bytes: int = DEFAULT_MAX_TENANT_FILE_BYTES,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> None:
        self.store = store
        self.redis = store.redis
        self.cipher = store.cipher
        self.producer = producer
        self.max_file_bytes = max_file_bytes
        self.max_tenant_files = max_tenant_files
        self.max_tenant_bytes = max_tenant_bytes
        self.max_output_bytes = max_output_bytes
        self.ttl_s = ttl_s or store.ttl_s
        self.last_enqueue_s = 0.0  # how long the last bulk enqueue took (measurement)
        self._bulk_create = self.redis.register_script(script("jobs_bulk_create"))
        self._quota_take = self.redis.register_script(script("file_quota_take"))

    # ---- files ----------------------------------------------------------------------------------------------

    async def create_file(self, tenant: str, filename: str, purpose: str, content: bytes, *,
                          internal_purpose: bool = False) -> FileInfo:
        if not internal_purpose and purpose not in UPLOAD_PURPOSES:
            raise RequestError(400, f"purpose {purpose!r} is not supported here: upload batch input with "
                                    f"purpose=\"batch\"", "invalid_purpose", "purpose")
        if not internal_purpose and len(content) > self.max_file_bytes:
            raise RequestError(413, f"the file is {len(content)} bytes; the limit is {self.max_file_bytes} "
                                    "(FEDGATE_MAX_BATCH_FILE_BYTES): split it", "file_too_large", "file")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "the file is not UTF-8 text: batch input must be UTF-8 JSONL", "invalid_file",
                               "file") from None
        pieces = [text[at:at + FILE_CHUNK_CHARS] for at in range(0, len(text), FILE_CHUNK_CHARS)] or [""]
        sealed = await asyncio.to_thread(lambda: [self.cipher.encrypt(piece).decode() for piece in pieces])
        info = FileInfo("file-" + secrets.token_hex(12), tenant, filename or "upload.jsonl", purpose, len(content),
                        now(), now() + self.ttl_s)
        mapping = {
            "tenant": tenant, "filename": info.filename, "purpose": purpose, "bytes": str(info.bytes),
            "created_at": repr(info.created_at), "expires_at": repr(info.expires_at), "parts": str(len(sealed)),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(file_key(info.id), mapping=mapping)
            for part, piece in enumerate(sealed):  # one piece per command: no request grows with the file
                pipe.hset(file_key(info.id), _content_field(part), piece)
            pipe.expire(file_key(info.id), self.ttl_s)
            pipe.zadd(tenant_file_list_key(tenant), {info.id: info.created_at})
            pipe.expire(tenant_file_list_key(tenant), self.ttl_s)
            await pipe.execute()
        if not internal_purpose:
            try:
                await self._take_quota(info)
            except BaseException:  # refused (or failed): nothing is left behind
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(file_key(info.id))
                    pipe.zrem(tenant_file_list_key(tenant), info.id)
                    await pipe.execute()
                raise
        return info

    async def file_usage(self, tenant: str) -> tuple[int, int]:
        """(files, bytes) of uploads the tenant keeps now (expired and deleted files no longer count)."""
        _, files, used = await self._quota_take(
            keys=[tenant_files_key(tenant), tenant_file_bytes_key(tenant)],
            args=[repr(now()), file_key(""), "", 0, 0, self.max_tenant_files, self.max_tenant_bytes, self.ttl_s])
        return int(files), int(used)

    def quota_refusal(self, tenant: str, files: int, used: int, size: int | None) -> RequestError | None:
        """The 403 for an upload of `size` bytes (None: not known yet) that the tenant's quota has no room for."""
        if files >= self.max_tenant_files:
            return RequestError(
                403, f"tenant {tenant!r} keeps {files} uploaded files, its quota (FEDGATE_MAX_FILES_PER_TENANT is "
                f"{self.max_tenant_files}): delete files it no longer needs (DELETE /v1/files/{{file_id}}) or wait "
                "until they expire", "file_quota_exceeded", "file")
        if used + (size or 0) > self.max_tenant_bytes or (size is None and used >= self.max_tenant_bytes):
            room = max(self.max_tenant_bytes - used, 0)
            return RequestError(
                403, f"tenant {tenant!r} keeps {used} bytes of uploaded files; its quota (FEDGATE_MAX_FILE_BYTES_PER_"
                f"TENANT) is {self.max_tenant_bytes}, so {room} bytes are left: delete files it no longer needs "
                "(DELETE /v1/files/{file_id}) or upload a smaller file", "file_quota_exceeded", "file")
        return None

    async def _take_quota(self, info: FileInfo) -> None:
        assert info.expires_at is not None
        verdict, files, used = await self._quota_take(
            keys=[tenant_files_key(info.tenant), tenant_file_bytes_key(info.tenant)],
            args=[repr(now()), file_key(""), info.id, info.bytes, repr(info.expires_at), self.max_tenant_files,
                  self.max_tenant_bytes, self.ttl_s])
        if int(verdict) != 1:
            refusal = self.quota_refusal(info.tenant, int(files), int(used), info.bytes)
            assert refusal is not None
            raise refusal

    async def delete_file(self, tenant: str, file_id: str) -> bool:
        """Delete one of the tenant's files (its quota is freed); False when it has no such file."""
        if await self.redis.hget(file_key(file_id), "tenant") != tenant:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(file_key(file_id))
            pipe.zrem(tenant_files_key(tenant), file_id)
            pipe.hdel(tenant_file_bytes_key(tenant), file_id)
            pipe.zrem(tenant_file_list_key(tenant), file_id)
            await pipe.execute()
        return True

    async def list_files(self, tenant: str, *, purpose: str | None = None, after: str | None = None,
                         limit: int = 10000, newest_first: bool = True) -> tuple[list[FileInfo], bool]:
        """The tenant's files in creation order (OpenAI's default: newest first), from the one after `after`; a
        file that expired (retention, its TTL) is dropped from the index as it is met. (files, has_more)."""
        index = tenant_file_list_key(tenant)
        start = 0
        if after is not None:
            rank = await (self.redis.zrevrank(index, after) if newest_first else self.redis.zrank(index, after))
            if rank is None:
                return [], False
            start = rank + 1
        found: list[FileInfo] = []
        page = 100
        while len(found) <= limit:
            ids = await (self.redis.zrevrange(index, start, start + page - 1) if newest_first
                         else self.redis.zrange(index, start, start + page - 1))
            if not ids:
                break
            start += len(ids)
            for file_id in ids:
                info = await self.get_file(tenant, file_id)
                if info is None:
                    await self.redis.zrem(index, file_id)
                    start -= 1
                elif purpose is None or info.purpose == purpose:
                    found.append(info)
        return found[:limit], len(found) > limit

    async def get_file(self, tenant: str, file_id: str) -> FileInfo | None:
        values = await self.redis.hmget(file_key(file_id), list(_FILE_FIELDS))
        row = dict(zip(_FILE_FIELDS, values, strict=True))
        if row["tenant"] is None or row["tenant"] != tenant:
            return None
        return FileInfo(file_id, tenant, row["filename"] or "", row["purpose"] or "", int(row["bytes"] or 0),
                        float(row["created_at"] or 0), float(row["expires_at"]) if row["expires_at"] else None)

    async def file_content(self, tenant: str, file_id: str) -> bytes | None:
        owner, parts = await self.redis.hmget(file_key(file_id), ["tenant", "parts"])
        if owner != tenant:
            return None
        fields = [_content_field(part) for part in range(int(parts or 1))]
        sealed: list[str | None] = []
        for start in range(0, len(fields), 16):  # a few pieces per reply
            sealed.extend(await self.redis.hmget(file_key(file_id), fields[start:start + 16]))
        if any(piece is None for piece in sealed):
            return None  # expired or deleted while it was read
        text = await asyncio.to_thread(lambda: "".join(self.cipher.decrypt(p.encode()) for p in sealed if p))
        return text.encode()

    # ---- batches --------------------------------------------------------------------------------------------

    async def create_batch(self, tenant: TenantConfig, input_file_id: str, endpoint: str, completion_window: str,
                           metadata: dict[str, str] | None = None) -> dict[str, Any]:
        if endpoint not in ENDPOINTS:
            raise RequestError(400, f"endpoint {endpoint!r} is not supported: use {' or '.join(map(repr, ENDPOINTS))}",
                               "invalid_endpoint", "endpoint")
        if completion_window not in COMPLETION_WINDOWS:
            raise RequestError(400, f"completion_window {completion_window!r} is not supported: use \"24h\"",
                               "invalid_completion_window", "completion_window")
        metadata = metadata or {}
        if len(metadata) > 16 or any(len(k) > 64 or len(str(v)) > 512 for k, v in metadata.items()):
            raise RequestError(400, "metadata takes at most 16 keys of up to 64 characters, values up to 512",
                               "invalid_metadata", "metadata")
        await spending.check_budget(self.redis, tenant)  # over a spend cap: a RequestError (402), answered as it is
        info = await self.get_file(tenant.name, input_file_id)
        if info is None:
            raise RequestError(404, f"no file {input_file_id!r} for this tenant", "file_not_found", "input_file_id")
        if info.purpose != "batch":
            raise RequestError(400, f"file {input_file_id} has purpose {info.purpose!r}; a batch needs a file uploaded "
                                    "with purpose \"batch\"", "invalid_input_file", "input_file_id")
        content = await self.file_content(tenant.name, input_file_id)
        if content is None:
            raise RequestError(404, f"no file {input_file_id!r} for this tenant", "file_not_found", "input_file_id")

        batch_id = "batch_" + secrets.token_hex(12)
        created = now()
        key = batch_key(batch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={
                "tenant": tenant.name, "status": "validating", "input_file_id": input_file_id, "endpoint": endpoint,
                "completion_window": completion_window, "metadata": json.dumps(metadata),
                "created_at": repr(created), "expires_at": repr(created + COMPLETION_WINDOWS[completion_window]),
            })
            pipe.expire(key, self.ttl_s)
            pipe.zadd(tenant_batches_key(tenant.name), {batch_id: created})
            await pipe.execute()

        try:
            parsed = await asyncio.to_thread(parse_input, content.decode(), tenant=tenant, producer=self.producer,
                                             endpoint=endpoint)
        except Exception as exc:
            parsed = ParsedInput()
            parsed.add_error(LineError(None, "validation_failed",
                                       f"the input could not be validated ({exc.__class__.__name__})"))
        if parsed.errors:
            errors = [e.as_dict() for e in parsed.errors]
            if parsed.error_count > len(errors):
                errors.append({"code": "too_many_errors", "line": None, "param": None,
                               "message": f"{parsed.error_count} lines have errors; the first {len(errors)} shown"})
            await self.redis.hset(key, mapping={"status": "failed", "failed_at": repr(now()), "total": "0",
                                                "errors": json.dumps({"object": "list", "data": errors})})
            return await self._must_view(batch_id)
        try:
            await self.enqueue(batch_id, tenant.name, parsed.lines)
        except Exception as exc:
            await self.redis.hset(key, mapping={
                "status": "failed", "failed_at": repr(now()), "total": "0",
                "errors": json.dumps({"object": "list", "data": [
                    {"code": "enqueue_failed", "line": None, "param": None,
                     "message": f"the batch could not be enqueued ({exc.__class__.__name__}); nothing was run"}]}),
            })
            raise RequestError(503, "the batch could not be enqueued; nothing was run, try again",
                               "store_unavailable") from exc
        await self.redis.hset(key, mapping={"status": "in_progress", "in_progress_at": repr(now()),
                                            "total": str(len(parsed.lines))})
        return await self._must_view(batch_id)

    async def _must_view(self, batch_id: str) -> dict[str, Any]:
        view = await self._view(batch_id)
        if view is None:
            raise RequestError(404, f"batch {batch_id} has expired", "batch_not_found")
        return view

    async def enqueue(self, batch_id: str, tenant: str, lines: Sequence[BatchLine]) -> list[str]:
        """Write every job (hash, expiry, batch link) in pipelines of CHUNK, then schedule them all in the delay
        queue due now, one ZADD per chunk. On failure everything written is removed. Returns the job ids."""
        started = time.perf_counter()
        accepted = [line for line in lines if line.submission is not None]
        rejected = [line for line in lines if line.submission is None]
        encoded = await asyncio.to_thread(self._encode_jobs, tenant, batch_id, accepted)
        job_ids = [job_id for job_id, _, _ in encoded]
        members = [member for _, _, member in encoded]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if rejected:
                    for part in _chunks(rejected):
                        pipe.rpush(batch_rejected_key(batch_id), *[json.dumps(
                            {"custom_id": r.custom_id, "line": r.line, "status_code": r.reject_status,
                             "code": r.reject_code, "message": r.reject_message}) for r in part])
                    pipe.expire(batch_rejected_key(batch_id), self.ttl_s)
                    await pipe.execute()
                for part in _chunks(encoded):
                    await self._write_jobs(pipe, part)
                    pipe.rpush(batch_jobs_key(batch_id), *[job_id for job_id, _, _ in part])
                    pipe.zadd(keys.UNFINISHED, dict.fromkeys([job_id for job_id, _, _ in part], int(now() * 1000)))
                    await pipe.execute()
                if job_ids:
                    pipe.expire(batch_jobs_key(batch_id), self.ttl_s)
                    await pipe.execute()
                due_ms = now() * 1000
                for part in _chunks(members):
                    pipe.zadd(keys.delayed(keys.BATCH), dict.fromkeys(part, due_ms))
                    await pipe.execute()
                if members:
                    pipe.lpush(keys.delayed_wake(keys.BATCH), "1")
                    pipe.ltrim(keys.delayed_wake(keys.BATCH), 0, 0)
                    await pipe.execute()
        except BaseException:
            await self._undo(batch_id, job_ids, members)
            raise
        self.last_enqueue_s = time.perf_counter() - started
        for line in accepted:
            assert line.submission is not None
            metrics.record_submitted(line.submission.partner, tenant)
        return job_ids

    async def _write_jobs(self, pipe: Any, part: Sequence[tuple[str, dict[str, str], str]]) -> None:
        """HSET + EXPIRE for a chunk of jobs. Jobs with the same fields go through one script call per chunk
        (far fewer replies to parse than 2 commands per job); any others as plain commands."""
        names = list(part[0][1]) if part else []
        uniform = [job for job in part if list(job[1]) == names]
        for job_id, mapping, _ in part:
            if list(mapping) != names:
                pipe.hset(keys.job(job_id), mapping=mapping)
                pipe.expire(keys.job(job_id), self.ttl_s)
        if uniform:
            args: list[str] = [str(self.ttl_s), *names]
            for _, mapping, _ in uniform:
                args.extend(mapping.values())
            await self._bulk_create(keys=[keys.job(job_id) for job_id, _, _ in uniform], args=args, client=pipe)

    def _encode_jobs(self, tenant: str, batch_id: str, lines: Sequence[BatchLine]) -> list[tuple[str, dict[str, str],
                                                                                                     str]]:
        out: list[tuple[str, dict[str, str], str]] = []
        created = now()
        for line in lines:
            submission = line.submission
            assert submission is not None
            record = JobRecord(
                id=new_job_id(), tenant=tenant, partner=submission.partner, requested_partner=submission.partner,
                status=JobStatus.QUEUED, attempt=1, created_at=created, messages=submission.conversation(),
                params={k: v for k, v in {"max_tokens": submission.max_tokens,
                                          "temperature": submission.temperature}.items() if v is not None}
                | line.params,
                metadata=submission.metadata, lane=keys.BATCH, kind=line.kind, options=submission.options,
            )
            mapping = self.store.encode_new(record)
            mapping.update({"batch_id": batch_id, "custom_id": line.custom_id, "batch_model": line.model})
            out.append((record.id, mapping, delayed_member(record.id, record.partner, record.attempt)))
        return out

    async def _undo(self, batch_id: str, job_ids: list[str], members: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in _chunks(members):
                pipe.zrem(keys.delayed(keys.BATCH), *part)
            for part in _chunks(job_ids):
                pipe.delete(*[keys.job(j) for j in part])
            pipe.delete(batch_jobs_key(batch_id), batch_rejected_key(batch_id))
            await pipe.execute()

    async def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any] | None:
        owner = await self.redis.hget(batch_key(batch_id), "tenant")
        if owner is None or owner != tenant:
            return None
        return await self._view(batch_id)

    async def list_batches(self, tenant: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        index = tenant_batches_key(tenant)
        start = 0
        if after:
            rank = await self.redis.zrevrank(index, after)
            if rank is None:
                return [], False
            start = rank + 1
        views: list[dict[str, Any]] = []
        while len(views) <= limit:
            ids: list[str] = await self.redis.zrevrange(index, start, start + limit)
            if not ids:
                break
            start += len(ids)
            stale: list[str] = []
            for batch_id in ids:
                view = await self._view(batch_id)
                if view is None:  # expired: drop it from the index
                    stale.append(batch_id)
                else:
                    views.append(view)
            if stale:
                await self.redis.zrem(index, *stale)
                start -= len(stale)
        return views[:limit], len(views) > limit

    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any] | None:
        key = batch_key(batch_id)
        owner, status = await self.redis.hmget(key, ["tenant", "status"])
        if owner is None or owner != tenant:
            return None
        if status in FINAL:
            raise RequestError(409, f"batch {batch_id} is already {status}; nothing to cancel", "batch_finished")
        if status != "cancelling":
            await self.redis.hset(key, mapping={"status": "cancelling", "cancelling_at": repr(now())})
            await self._cancel_jobs(await self.redis.lrange(batch_jobs_key(batch_id), 0, -1))
        view = await self._view(batch_id, refresh=False)
        assert view is not None
        return view

    async def _cancel_jobs(self, job_ids: list[str], concurrency: int = 32) -> None:
        statuses = await self._statuses(job_ids)
        pending = [j for j, s in zip(job_ids, statuses, strict=True) if s is not None and s not in _TERMINAL_JOB]
        gate = asyncio.Semaphore(concurrency)

        async def cancel(job_id: str) -> None:
            async with gate:  # the payload follows the retention of the partners the job was meant for or sent to
                retention_s = retention_of(self.producer.config, await self.store.partners_of(job_id))
                await self.store.cancel(job_id, retention_s=retention_s)

        await asyncio.gather(*(cancel(j) for j in pending))

    async def _statuses(self, job_ids: Sequence[str]) -> list[str | None]:
        out: list[str | None] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in _chunks(job_ids):
                for job_id in part:
                    pipe.hget(keys.job(job_id), "status")
                out.extend(await pipe.execute())
        return out

    async def _view(self, batch_id: str, *, refresh: bool = True) -> dict[str, Any] | None:
        raw: dict[str, str] = await self.redis.hgetall(batch_key(batch_id))
        if not raw:
            return None
        counts = {"total": int(raw.get("total", "0")), "completed": int(raw.get("completed", "0")),
                  "failed": int(raw.get("failed", "0"))}
        if raw["status"] in ("in_progress", "finalizing", "cancelling"):
            counts = await self._refresh(batch_id, raw, finalize=refresh)
            raw = await self.redis.hgetall(batch_key(batch_id)) or raw
        return _batch_object(batch_id, raw, counts)

    async def _refresh(self, batch_id: str, raw: dict[str, str], *, finalize: bool) -> dict[str, int]:
        """Progress from the counters each job bumps as it settles (lua/batch_counter.lua): O(1) per read."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(batch_jobs_key(batch_id))
            pipe.llen(batch_rejected_key(batch_id))
            pipe.hmget(batch_key(batch_id), ["n_succeeded", "n_unsuccessful"])
            n_jobs, rejected, (succeeded_raw, unsuccessful_raw) = await pipe.execute()
        succeeded, unsuccessful = int(succeeded_raw or 0), int(unsuccessful_raw or 0)
        finished = succeeded + unsuccessful
        counts = {"total": int(n_jobs) + int(rejected), "completed": succeeded, "failed": int(rejected) + unsuccessful}
        expired = raw["status"] == "in_progress" and now() > float(raw.get("expires_at", "inf"))
        if not (finalize and (expired or finished >= int(n_jobs))):
            return counts
        job_ids: list[str] = await self.redis.lrange(batch_jobs_key(batch_id), 0, -1)
        if expired:
            await self.redis.hset(batch_key(batch_id), "expire_pending", "1")
            await self._cancel_jobs(job_ids)
        await self._finalize(batch_id, job_ids)
        return counts

    async def _finalize(self, batch_id: str, job_ids: list[str]) -> None:
        """Build the output and error files and settle the batch; one reader does it, the others see finalizing."""
        lock = batch_lock_key(batch_id)
        if not await self.redis.set(lock, "1", nx=True, ex=FINALIZE_LOCK_S):
            return
        key = batch_key(batch_id)
        try:
            tenant, status, expire_pending = await self.redis.hmget(key, ["tenant", "status", "expire_pending"])
            if status not in ("in_progress", "finalizing", "cancelling"):
                return
            if status == "in_progress":
                await self.redis.hset(key, mapping={"status": "finalizing", "finalizing_at": repr(now())})
            rows: list[list[str | None]] = []
            async with self.redis.pipeline(transaction=False) as pipe:
                for part in _chunks(job_ids):
                    for job_id in part:
                        pipe.hmget(keys.job(job_id), list(_RESULT_FIELDS))
                    rows.extend(await pipe.execute())
            rejected = [json.loads(r) for r in await self.redis.lrange(batch_rejected_key(batch_id), 0, -1)]
            output, errors, completed, failed = await asyncio.to_thread(self._build_results, job_ids, rows, rejected)
            output_id = error_id = None
            if output:
                output_id = (await self.create_file(tenant, f"{batch_id}_output.jsonl", "batch_output", output,
                                                    internal_purpose=True)).id
            if errors:
                error_id = (await self.create_file(tenant, f"{batch_id}_error.jsonl", "batch_output", errors,
                                                   internal_purpose=True)).id
            if status == "cancelling":
                final, stamp = "cancelled", "cancelled_at"
            elif expire_pending:
                final, stamp = "expired", "expired_at"
            else:
                final, stamp = "completed", "completed_at"
            mapping = {"status": final, stamp: repr(now()), "total": str(len(job_ids) + len(rejected)),
                       "completed": str(completed), "failed": str(failed)}
            if output_id:
                mapping["output_file_id"] = output_id
            if error_id:
                mapping["error_file_id"] = error_id
            await self._apply_file_retention(batch_id, rows, output_id)
            await self.redis.hset(key, mapping=mapping)
        finally:
            await self.redis.delete(lock)

    # ---- retention of a finished batch's files ----------------------------------------------------------------

    async def _apply_file_retention(self, batch_id: str, rows: list[list[str | None]], output_id: str | None) -> None:
        """The files follow the jobs' retention (policy.retention_s), counted from now (the batch's end): the input
        file holds every request's prompt, so it is kept no longer than the shortest retention among all the batch's
        jobs (0: deleted now); the output file holds the outputs still retained, so it is kept no longer than the
        shortest retention among the jobs whose output it carries. Files of a batch of no retention keep their TTL."""
        every: list[int] = []
        in_output: list[int] = []
        for values in rows:
            row = dict(zip(_RESULT_FIELDS, values, strict=True))
            if row["status"] is None:
                continue  # the job's record expired: nothing of it is left to keep or drop
            seconds = retention_of(self.producer.config, _row_partners(row))
            if seconds is None:
                continue
            every.append(seconds)
            if row["status"] == JobStatus.SUCCEEDED.value and row["output"]:
                in_output.append(seconds)
        if every:
            await self._expire_file(await self.redis.hget(batch_key(batch_id), "input_file_id"), min(every))
        if in_output:
            await self._expire_file(output_id, min(in_output))

    async def _expire_file(self, file_id: str | None, seconds: int) -> None:
        """Delete the file now (0), or make it expire within `seconds` (never later than it would have)."""
        if not file_id:
            return
        key = file_key(file_id)
        if seconds <= 0:
            await self.redis.delete(key)
            return
        left = await self.redis.ttl(key)
        if left == -1 or left > seconds:
            await self.redis.expire(key, seconds)

    def _build_results(self, job_ids: list[str], rows: list[list[str | None]], rejected: list[dict[str, Any]]
                       ) -> tuple[bytes, bytes, int, int]:
        output: list[str] = []
        errors: list[str] = []
        output_bytes = 0
        for entry in rejected:
            error = {"message": entry["message"], "type": "invalid_request_error", "param": None,
                     "code": entry["code"]}
            errors.append(json.dumps({
                "id": "batch_req_" + secrets.token_hex(12), "custom_id": entry["custom_id"],
                "response": {"status_code": entry["status_code"], "request_id": None, "body": {"error": error}},
                "error": {"code": entry["code"], "message": entry["message"]},
            }))
        for job_id, values in zip(job_ids, rows, strict=True):
            row = dict(zip(_RESULT_FIELDS, values, strict=True))
            request_id = "batch_req_" + job_id.removeprefix("job_")
            if row["status"] == JobStatus.SUCCEEDED.value and row["output"]:
                text = self.cipher.decrypt(row["output"].encode())
                answer = (embedding_list(row, text) if row["kind"] == EMBEDDING
                          else chat_completion(job_id, row, text, self.cipher))
                result = json.dumps({
                    "id": request_id, "custom_id": row["custom_id"],
                    "response": {"status_code": 200, "request_id": job_id, "body": answer},
                    "error": None,
                })
                if output_bytes + len(result.encode()) + 1 <= self.max_output_bytes:
                    output.append(result)
                    output_bytes += len(result.encode()) + 1
                    continue
                errors.append(json.dumps({"id": request_id, "custom_id": row["custom_id"], "response": None, "error": {
                    "code": "output_too_large",
                    "message": f"the batch's output file reached its limit of {self.max_output_bytes} bytes "
                               f"(FEDGATE_MAX_BATCH_OUTPUT_BYTES); this request's result is at GET /v1/jobs/{job_id} "
                               "until the job expires"}}))
                continue
            if row["status"] is None:
                code, message = "expired", f"job {job_id} expired before the batch was read"
            elif row["status"] == JobStatus.SUCCEEDED.value:
                code, message = "output_not_retained", "the partner's retention policy removed the output"
            elif row["status"] == JobStatus.CANCELLED.value:
                code, message = "batch_cancelled", "the request was cancelled before it finished"
            else:
                code, message = row["status"] or "failed", row["error"] or "the job failed"
            errors.append(json.dumps({"id": request_id, "custom_id": row["custom_id"], "response": None,
                                      "error": {"code": code, "message": message}}))
        completed = len(output)
        body_out = ("\n".join(output) + "\n").encode() if output else b""
        body_err = ("\n".join(errors) + "\n").encode() if errors else b""
        return body_out, body_err, completed, len(errors)


def _row_partners(row: dict[str, str | None]) -> list[str]:
    """Every partner a batch job's prompt was meant for or sent to, from its result row."""
    return partners_named(row["requested_partner"], row["partner"], row["answered_by"], history=row["history"])


def chat_completion(job_id: str, row: dict[str, str | None], text: str, cipher: PayloadCipher) -> dict[str, Any]:
    """The chat.completion object /v1/chat/completions answers with, for a finished batch job."""
    usage_json = row.get("usage")
    sealed_calls = row.get("tool_calls")
    calls = json.loads(cipher.decrypt(sealed_calls.encode())) if sealed_calls else None
    return models.chat_completion(
        job_id, model=row.get("batch_model") or "", text=text,
        usage=Usage.model_validate_json(usage_json) if usage_json else None,
        created_at=float(row.get("created_at") or 0), answered_by=row.get("answered_by"),
        finish_reason=row.get("finish_reason"),
        tool_calls=[ToolCall.model_validate(call) for call in calls] if calls else None,
    )


def embedding_list(row: dict[str, str | None], packed: str) -> dict[str, Any]:
    """The list /v1/embeddings answers with, for a finished batch job, in the encoding its line asked for."""
    params = json.loads(row.get("params") or "{}")
    usage = Usage.model_validate_json(row["usage"]) if row.get("usage") else Usage()
    vectors = embedding_request.encoded(packed, params.get("encoding_format", "float"))
    return embedding_request.embedding_list(vectors, model=row.get("batch_model") or "",
                                            prompt_tokens=usage.prompt_tokens)


def _batch_object(batch_id: str, raw: dict[str, str], counts: dict[str, int]) -> dict[str, Any]:
    errors = json.loads(raw["errors"]) if raw.get("errors") else None
    metadata = json.loads(raw["metadata"]) if raw.get("metadata") else None
    expires = raw.get("expires_at")
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": raw.get("endpoint", ENDPOINT),
        "errors": errors,
        "input_file_id": raw.get("input_file_id", ""),
        "completion_window": raw.get("completion_window", "24h"),
        "status": raw["status"],
        "output_file_id": raw.get("output_file_id"),
        "error_file_id": raw.get("error_file_id"),
        "created_at": int(float(raw.get("created_at", "0"))),
        "in_progress_at": _int_or_none(raw.get("in_progress_at")),
        "expires_at": int(float(expires)) if expires and math.isfinite(float(expires)) else None,
        "finalizing_at": _int_or_none(raw.get("finalizing_at")),
        "completed_at": _int_or_none(raw.get("completed_at")),
        "failed_at": _int_or_none(raw.get("failed_at")),
        "expired_at": _int_or_none(raw.get("expired_at")),
        "cancelling_at": _int_or_none(raw.get("cancelling_at")),
        "cancelled_at": _int_or_none(raw.get("cancelled_at")),
        "request_counts": counts,
        "metadata": metadata or None,
    }
