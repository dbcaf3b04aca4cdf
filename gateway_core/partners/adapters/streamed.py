"""One streamed exchange with a partner: ask for its stream, hand each text delta on as it is decoded, and end in
the same outcomes as a whole-body call (gateway_core.partners.adapters.base.PartnerAdapter.call), with the tool calls
the stream assembled and the partner's finish reason.

The total deadline is the partner's `timeout_s`, as for a whole body; between two reads the partner may be silent
at most `STREAM_IDLE_TIMEOUT_S` (less when the deadline is shorter). Leaving early (the deadline, a delta sink that
raises, a cancelled task) closes the connection, which is how the partner learns to stop generating.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from gateway_core.partners.adapters.base import (
    Outcome,
    PartnerAdapter,
    PartnerRefused,
    PartnerResponse,
    StreamError,
    StreamProgress,
    transport_failure,
)
from gateway_core.partners.adapters.sse import SseDecoder, SseEvent
from gateway_core.partners.adapters.transport import STREAMED

STREAM_IDLE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0

DeltaSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class StreamedResponse:
    response: PartnerResponse
    finish_reason: str | None
    streamed_chars: int  # how much text reached the sink before the outcome (0: a retry is invisible)


async def call_streamed(adapter: PartnerAdapter, request_body: dict[str, object], on_delta: DeltaSink,
                        ) -> StreamedResponse:
    """Stream one answer. `on_delta` gets each piece of text; an exception it raises ends the call and propagates."""
    deadline_s = adapter.config.timeout_s
    idle_s = min(deadline_s, STREAM_IDLE_TIMEOUT_S)
    progress = StreamProgress()
    parts: list[str] = []
    streamed = 0

    def ended(response: PartnerResponse) -> StreamedResponse:
        return StreamedResponse(response, progress.finish_reason, streamed)

    try:
        content = json.dumps(request_body)
        headers = {"content-type": "application/json", "accept": "text/event-stream", **adapter.headers()}
    except Exception as exc:
        return ended(PartnerResponse(Outcome.FATAL, error=f"could not build the request ({exc.__class__.__name__})"))
    status_code: int | None = None
    try:
        async with asyncio.timeout(deadline_s), adapter.http.client().stream(
            "POST", adapter.stream_endpoint(), content=content, headers=headers,
            timeout=httpx.Timeout(idle_s, connect=min(CONNECT_TIMEOUT_S, deadline_s)), extensions={STREAMED: True},
        ) as response:
            status_code = response.status_code
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not 200 <= status_code < 300 or content_type != "text/event-stream":
                # An error, or a partner that answered the whole body at once: read as a whole-body call.
                body = await response.aread()
                whole = adapter.interpret(status_code, body, response.headers)
                if whole.outcome is Outcome.OK:
                    progress.finish_reason = whole.finish_reason or "stop"
                if whole.outcome is Outcome.OK and whole.text:
                    await on_delta(whole.text)
                    streamed += len(whole.text)
                return ended(whole)
            decoder = SseDecoder()
            async for chunk in response.aiter_raw():
                for event in decoder.feed(chunk):
                    delta = _read(adapter, event, progress)
                    if delta:
                        parts.append(delta)
                        await on_delta(delta)
                        streamed += len(delta)
            for event in decoder.close():
                delta = _read(adapter, event, progress)
                if delta:
                    parts.append(delta)
                    await on_delta(delta)
                    streamed += len(delta)
    except (TimeoutError, httpx.TimeoutException):
        return ended(PartnerResponse(Outcome.RETRYABLE, status_code,
                                     error=f"stream timed out (deadline {deadline_s:g}s, idle {idle_s:g}s)"))
    except httpx.HTTPError as exc:
        failure = transport_failure(exc)
        return ended(PartnerResponse(failure.outcome, status_code, error=f"stream: {failure.error}"))
    except PartnerRefused as exc:
        return ended(PartnerResponse(Outcome.FATAL, status_code, error=f"partner refused: {exc}"))
    except StreamError as exc:
        outcome = Outcome.RETRYABLE if exc.retryable else Outcome.FATAL
        return ended(PartnerResponse(outcome, status_code, error=f"error event in the stream: {exc}"))
    except _Unreadable as exc:
        return ended(PartnerResponse(Outcome.RETRYABLE, status_code, error=f"unreadable stream event: {exc}"))
    if not progress.complete:
        return ended(PartnerResponse(Outcome.RETRYABLE, status_code, error="the stream ended before the answer did"))
    try:
        tool_calls = progress.tool_calls.assembled()
    except ValueError:  # a call without its id or name
        return ended(PartnerResponse(Outcome.RETRYABLE, status_code, error="unreadable tool call in the stream"))
    if progress.finish_reason == "tool_calls" and not tool_calls:
        progress.finish_reason = "stop"  # e.g. Anthropic's forced output tool: the answer itself, not a call
    return ended(PartnerResponse(Outcome.OK, status_code, text="".join(parts), usage=progress.usage,
                                 finish_reason=progress.finish_reason, tool_calls=tool_calls))


class _Unreadable(Exception):
    pass


def _read(adapter: PartnerAdapter, event: SseEvent, progress: StreamProgress) -> str:
    try:
        return adapter.read_stream_event(event, progress)
    except (PartnerRefused, StreamError):
        raise
    except Exception as exc:  # a malformed event: the class only, its text may quote the partner's data
        raise _Unreadable(exc.__class__.__name__) from None
