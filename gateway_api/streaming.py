"""Streaming front doors: `stream: true` on /v1/chat/completions, and GET /v1/jobs/{id}/stream.

The call is still a job (redacted, budgeted, retried, failed over, metered, visible at /v1/jobs/{id}); its worker
relays the partner's stream into the job's Redis stream (gateway_core.jobs.job_stream), and the API process holding
the request reads it (XREAD BLOCK) and answers OpenAI's `chat.completion.chunk` events as the deltas come.

- The answer starts with the job's first delta: a job that fails before it answers as the non-streaming door does
  (a 502 in OpenAI's error shape), so a retry or a fallback before the first token is invisible.
- A run that fails after its first delta ends the client's stream with an error event (`data: {"error": ...}`, which
  the SDK raises); the job goes on with its normal routing, and its final state is at /v1/jobs/{id}.
- A client that goes away before the end cancels the job; the worker's next write is refused, and it closes the
  partner's stream.
- An output contract streams as one validated delta (the worker validates the whole answer first).
- Tool calls come whole, restored, in the job's `finish` entry: one chunk whose `delta.tool_calls` holds each call
  (index, id, type, function name and all its arguments) before the chunk with finish_reason `tool_calls`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from gateway_api import cancelling
from gateway_api.deps import Services, Tenant, error_body, services, wait_for_job
from gateway_api.openapi import errors
from gateway_core.errors import RequestError
from gateway_core.jobs.chat_options import ToolCall
from gateway_core.jobs.job_stream import JobStream, StreamEntry
from gateway_core.jobs.models import JobSubmission
from gateway_core.jobs.store import JobRecord

router = APIRouter(tags=["jobs"])

# Longest XREAD BLOCK: between two, the reader checks the job's status (an ending nobody announced in the stream,
# such as a cancel elsewhere) and, before the answer starts, whether the client is still there.
IDLE_CHECK_S = 1.0
KEEPALIVE_S = 15.0  # a comment line on an idle follower's stream, so proxies keep it open
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\n".encode() + _sse(data)


class JobReader:
    """Reads one job's stream from the start, remembering where it got to."""

    def __init__(self, svc: Services, job_id: str) -> None:
        self.svc = svc
        self.job_id = job_id
        self.stream = JobStream(svc.redis, svc.store.cipher)
        self.after = "0-0"

    async def next(self, block_s: float | None) -> list[StreamEntry]:
        entries = await self.stream.read(self.job_id, self.after,
                                         None if block_s is None else max(1, int(block_s * 1000)))
        if entries:
            self.after = entries[-1].id
        return entries

    async def record(self) -> JobRecord | None:
        return await self.svc.store.get(self.job_id)


# --- /v1/chat/completions with stream: true -----------------------------------------------------------------------


async def stream_chat_completion(request: Request, who: Tenant, submission: JobSubmission, model: str,
                                 include_usage: bool) -> Response:
    """Submit the job, wait for its first delta, then answer the deltas as `chat.completion.chunk` events."""
    svc = services(request)
    accepted = await svc.producer.submit(who, submission)
    reader = JobReader(svc, accepted.id)
    headers = {"x-fedgate-job-id": accepted.id, **SSE_HEADERS}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.chat_timeout_s
    try:
        first = await _first_entries(request, reader, deadline)
    except BaseException:
        cancel_soon(svc, accepted.id)
        raise
    if first is None:  # gone, or timed out: the job goes on as the non-streaming door leaves it
        if await request.is_disconnected():
            await cancel_job(svc, accepted.id)
            return Response(status_code=499)
        return JSONResponse(error_body(f"the job {accepted.id} has not answered after {svc.settings.chat_timeout_s:g}s;"
                                       f" poll GET /v1/jobs/{accepted.id}", "timeout", status=504), status_code=504,
                            headers={"x-fedgate-job-id": accepted.id})
    if first[0].kind in ("end", "error") and not any(e.kind == "delta" for e in first):
        record = await reader.record()
        status = record.status.value if record else "gone"
        reason = (record.error if record else None) or first[0].error or "no output"
        return JSONResponse(error_body(f"job {accepted.id} {status}: {reason}", "partner_failed", status=502),
                            status_code=502,
                            headers={"x-fedgate-job-id": accepted.id})
    chunks = ChatChunks(accepted.id, model, int(accepted.created_at), include_usage)
    body = _chat_events(svc, reader, chunks, first, deadline)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def _first_entries(request: Request, reader: JobReader, deadline: float) -> list[StreamEntry] | None:
    """The job's first stream entries; None when the client left or the deadline passed first."""
    loop = asyncio.get_running_loop()
    while (left := deadline - loop.time()) > 0:
        entries = await reader.next(min(IDLE_CHECK_S, left))
        if entries:
            return entries
        if await request.is_disconnected():
            return None
        record = await reader.record()
        if record is None or record.status.terminal:  # ended without a word in the stream (e.g. cancelled)
            return await reader.next(None) or [StreamEntry("0-0", "end", error=record.error if record else None)]
    return None


class ChatChunks:
    """OpenAI's `chat.completion.chunk` events for one job."""

    def __init__(self, job_id: str, model: str, created: int, include_usage: bool) -> None:
        self.common = {"id": f"chatcmpl-{job_id}", "object": "chat.completion.chunk", "created": created,
                       "model": model, "system_fingerprint": None}
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        usage = {"usage": None} if self.include_usage else {}
        return _sse({**self.common, "choices": [choice], **usage})

    def tool_calls(self, calls: list[ToolCall]) -> bytes:
        """The calls as OpenAI streams them, each whole in one fragment (the SDK assembles fragments by index)."""
        return self.chunk({"tool_calls": [{"index": index, **call.model_dump()} for index, call in enumerate(calls)]})

    def usage(self, entry: StreamEntry) -> bytes:
        usage = entry.usage
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        return _sse({**self.common, "choices": [],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion}})


def _error_event(message: str, code: str) -> bytes:
    return _sse({"error": {"message": message, "type": "server_error", "param": None, "code": code}})


async def _chat_events(svc: Services, reader: JobReader, chunks: ChatChunks, first: list[StreamEntry],
                       deadline: float) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    complete = False
    try:
        yield chunks.chunk({"role": "assistant", "content": "", "refusal": None})
        entries = first
        run = next((e.run for e in first if e.kind == "delta"), "")
        while True:
            for entry in entries:
                if entry.kind in ("delta", "finish") and run and entry.run != run:
                    # Another run took the job over after this one's deltas went out (its worker stopped): its
                    # answer starts again from the beginning, which this client cannot be given as a continuation.
                    yield _error_event(f"the answer of job {reader.job_id} was interrupted (its worker stopped); "
                                       f"the job goes on: poll GET /v1/jobs/{reader.job_id}", "partner_failed")
                    complete = True
                    return
                if entry.kind == "delta":
                    yield chunks.chunk({"content": entry.text})
                elif entry.kind == "finish":
                    if entry.tool_calls:
                        yield chunks.tool_calls(entry.tool_calls)
                    yield chunks.chunk({}, entry.finish_reason or "stop")
                    if chunks.include_usage:
                        yield chunks.usage(entry)
                    yield b"data: [DONE]\n\n"
                    complete = True
                    return
                else:  # an error after the answer began, or the job ended without finishing its answer
                    record = await reader.record()
                    yield _error_event(entry.error or f"job {reader.job_id} ended "
                                       f"{record.status.value if record else 'gone'}: "
                                       f"{(record.error if record else None) or 'no output'}", "partner_failed")
                    complete = True  # the job goes on (or has ended) by its own routing
                    return
            left = deadline - loop.time()
            if left <= 0:
                yield _error_event(f"the job {reader.job_id} did not finish its answer within "
                                   f"{svc.settings.chat_timeout_s:g}s; poll GET /v1/jobs/{reader.job_id}", "timeout")
                complete = True
                return
            entries = await reader.next(min(IDLE_CHECK_S, left))
            if not entries:
                record = await reader.record()
                if record is None or record.status.terminal:
                    entries = await reader.next(None) or [StreamEntry("0-0", "end")]
    finally:
        if not complete:  # the client went away before the end: the job is not wanted any more
            cancel_soon(svc, reader.job_id)


_cancelling: set[asyncio.Task[None]] = set()


def cancel_soon(svc: Services, job_id: str) -> None:
    """Cancel the job from a task of its own: the request being torn down (its task cancelled) cannot await."""
    task = asyncio.get_running_loop().create_task(cancel_job(svc, job_id))
    _cancelling.add(task)
    task.add_done_callback(_cancelling.discard)


async def cancel_job(svc: Services, job_id: str) -> None:
    """Cancel as POST /v1/jobs/{id}/cancel does (a finished job is left as it is)."""
    record = await svc.store.get(job_id)
    if record is None or record.status.terminal:
        return
    await cancelling.cancel(svc, record)


# --- GET /v1/jobs/{id}/stream --------------------------------------------------------------------------------------


@router.get("/v1/jobs/{job_id}/stream", responses={200: {"content": {"text/event-stream": {}}}, **errors(404)})
async def follow_job(job_id: str, request: Request, who: Tenant) -> StreamingResponse:
    """Follow a job as server-sent events: `delta` ({"text"}) as its answer is generated when the job streams,
    `error` when a run failed after its answer began (the job goes on), `finish` ({"finish_reason", "usage",
    "tool_calls"}), and last `job`: the finished job as GET /v1/jobs/{id} shows it. A finished job answers at once."""
    svc = services(request)
    record = await svc.store.get(job_id)
    if record is None or record.tenant != who.name:
        raise RequestError(404, f"no job {job_id!r} for this tenant", "job_not_found", "job_id")
    return StreamingResponse(_follow(svc, JobReader(svc, job_id), record), media_type="text/event-stream",
                             headers=SSE_HEADERS)


async def _follow(svc: Services, reader: JobReader, record: JobRecord) -> AsyncIterator[bytes]:
    streams = record.params.get("stream") is True
    quiet_since = time.monotonic()
    while not record.status.terminal:
        if streams:
            entries = await reader.next(IDLE_CHECK_S)
            for entry in entries:
                yield _follower_event(entry)
            if any(e.kind == "end" for e in entries):
                break
            if entries:
                quiet_since = time.monotonic()
        else:
            await wait_for_job(svc, reader.job_id, IDLE_CHECK_S * 10)
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        record = await reader.record() or record
    for entry in await reader.next(None):  # what is left, or the whole stream of a job that had already finished
        if entry.kind != "end":
            yield _follower_event(entry)
    finished = await wait_for_job(svc, reader.job_id, 0) or record
    yield _event("job", json.loads(finished.view().model_dump_json()))


def _follower_event(entry: StreamEntry) -> bytes:
    if entry.kind == "delta":
        return _event("delta", {"text": entry.text, "attempt": entry.attempt})
    if entry.kind == "finish":
        usage = entry.usage.model_dump() if entry.usage else None
        calls = [call.model_dump() for call in entry.tool_calls] if entry.tool_calls else None
        return _event("finish", {"finish_reason": entry.finish_reason, "usage": usage, "tool_calls": calls,
                                 "attempt": entry.attempt})
    if entry.kind == "error":
        return _event("error", {"error": {"message": entry.error, "type": "server_error", "code": "partner_failed"},
                                "attempt": entry.attempt})
    return b": end\n\n"


def install(app: FastAPI) -> None:
    app.include_router(router)
