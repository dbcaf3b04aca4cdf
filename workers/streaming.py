"""The worker's side of streaming: relay a partner's stream into the job's Redis stream as it is generated.

A job streams when its params say so (`stream: true`, set by the OpenAI door for `stream: true` and by
`POST /v1/jobs`). The run asks the partner for its own stream when nothing needs the whole answer first (no output
contract) and the adapter can; each delta is restored (placeholders split across deltas included) and written to
the job's stream, guarded by the run token. Otherwise the run calls as usual and the finished, validated output goes
out as one delta. Nothing is written before the partner's first token, so a retry or a fallback before it is
invisible to the reader; a run that fails after writing ends its part of the stream with an `error` entry. The
tool calls the answer asks for go out whole, restored, in the `finish` entry (their arguments are not streamed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway_core.jobs.chat_options import ToolCall
from gateway_core.jobs.job_stream import LINGER_S, JobStream
from gateway_core.jobs.models import Usage
from gateway_core.jobs.store import JobRecord
from gateway_core.partners.adapters.base import CallRequest, Outcome, PartnerAdapter, PartnerResponse
from gateway_core.partners.adapters.streamed import call_streamed
from gateway_core.redaction.streaming import StreamRestorer
from workers.message_redaction import restore_tool_calls


class RunLost(Exception):
    """The stream refused the run's write: it no longer holds the job (cancelled, taken over, finished)."""


def wants_stream(record: JobRecord) -> bool:
    return record.params.get("stream") is True


def streams_live(record: JobRecord, adapter: PartnerAdapter, has_contract: bool) -> bool:
    """Whether this run relays the partner's own stream (else the whole output goes out as one delta)."""
    return wants_stream(record) and adapter.supports_streaming and not has_contract


async def relay(stream: JobStream, adapter: PartnerAdapter, request: CallRequest, *, job_id: str, token: str,
                attempt: int, restore: Callable[[str], str]) -> PartnerResponse:
    """Call the partner streamed, writing restored deltas as they come, then `finish` with the restored tool calls
    (or `error` when the run failed after writing). The response carries the partner's whole text and tool calls,
    unrestored, as a whole-body call's does."""
    restorer = StreamRestorer(restore)
    sent = 0

    async def write(text: str) -> None:
        nonlocal sent
        if not await stream.delta(job_id, token, attempt, text):
            raise RunLost()
        sent += len(text)

    async def on_delta(delta: str) -> None:
        text = restorer.feed(delta)
        if text:
            await write(text)

    result = await call_streamed(adapter, adapter.stream_body(request), on_delta)
    response = result.response
    if response.outcome is Outcome.OK:
        tail = restorer.flush()
        if tail:
            await write(tail)
        if not await stream.finish(job_id, token, attempt, result.finish_reason or "stop", response.usage,
                                   restore_tool_calls(response.tool_calls, restore)):
            raise RunLost()
    elif sent:
        await stream.failed(job_id, token, attempt, f"the partner call failed after the answer began: "
                                                    f"{response.error or response.outcome.value}")
    return response


async def emit_whole(stream: JobStream, record: JobRecord, token: str, attempt: int, output: str,
                     response: PartnerResponse, tool_calls: list[ToolCall] | None = None) -> None:
    """The finished output as one delta then `finish` (with the restored `tool_calls`): for a run that did not relay
    a live stream."""
    if output and not await stream.delta(record.id, token, attempt, output):
        return
    finish_reason: Any = getattr(response, "finish_reason", None) or "stop"
    await stream.finish(record.id, token, attempt, str(finish_reason), response.usage or Usage(), tool_calls)


async def end(stream: JobStream, record: JobRecord, retention_s: int | None) -> None:
    """The job settled: wake its readers; the stream outlives it briefly, never longer than the payload's
    retention."""
    linger = LINGER_S if retention_s is None else max(1, min(LINGER_S, retention_s))
    await stream.end(record.id, linger)
