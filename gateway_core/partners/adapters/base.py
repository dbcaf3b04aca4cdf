"""The adapter interface, the shared outcome classification and the one pooled HTTP client per process."""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from gateway_core.config import PartnerConfig
from gateway_core.jobs.backoff import parse_retry_after
from gateway_core.jobs.chat_options import ChatOptions, ToolCall
from gateway_core.jobs.models import Message, Usage
from gateway_core.partners.adapters.capabilities import UnsupportedOption
from gateway_core.partners.adapters.sse import SseEvent
from gateway_core.partners.adapters.stream_tools import ToolCallAssembler
from gateway_core.partners.adapters.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AiohttpTransport,
    ResponseTooLarge,
    TLSFailure,
)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def schema_instruction(output: OutputSchema) -> str:
    """For partners without a native structured-output switch: say it in words."""
    return (
        "Reply with a single JSON value and nothing else. It must conform to this JSON Schema "
        f"(named {output.name}):\n{json.dumps(output.schema)}"
    )


class Outcome(StrEnum):
    OK = "ok"
    RETRYABLE = "retryable"
    FATAL = "fatal"
    CONTRACT_VIOLATION = "contract_violation"


@dataclass(frozen=True)
class OutputSchema:
    """Structured output to ask the partner for, the way it supports it."""

    name: str
    schema: dict[str, Any]
    json_object: bool = False  # response_format json_object: any JSON object (the schema is {"type": "object"})
    strict: bool | None = None  # response_format json_schema's `strict`, for partners that take it


@dataclass(frozen=True)
class CallRequest:
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    output: OutputSchema | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    options: ChatOptions | None = None  # the rest of the chat request: tools, stop, top_p, seed, ... (redacted)


@dataclass(frozen=True)
class PartnerResponse:
    outcome: Outcome
    status_code: int | None = None
    text: str | None = None
    usage: Usage = field(default_factory=Usage)
    retry_after_s: float | None = None
    error: str | None = None
    raw: dict[str, Any] | None = None
    finish_reason: str | None = None  # OpenAI's vocabulary: stop, length, tool_calls, content_filter
    tool_calls: list[ToolCall] | None = None
    logprobs: dict[str, Any] | None = None  # OpenAI's choice.logprobs, where the partner gives them


@dataclass
class StreamProgress:
    """What a partner's stream has said so far besides its text. `finish_reason` is in OpenAI's words (stop,
    length, tool_calls, content_filter); `ended` is set by the stream's own end marker; `tool_calls` gathers the
    calls the model asks for (never as text)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    ended: bool = False
    tool_calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)

    @property
    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)

    @property
    def complete(self) -> bool:
        return self.ended or self.finish_reason is not None


class StreamError(Exception):
    """The partner sent an error event in the middle of its stream (e.g. Anthropic's `overloaded_error`)."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def classify_status(status_code: int) -> Outcome:
    if 200 <= status_code < 300:
        return Outcome.OK
    if status_code in RETRYABLE_STATUS or status_code >= 500:
        return Outcome.RETRYABLE
    return Outcome.FATAL


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:300]
        if isinstance(err, str):
            return err[:300]
    return fallback


class PartnerRefused(ValueError):
    """The partner answered, and declined to answer this prompt (a content filter, a safety block): asking the same
    partner again cannot help, so the outcome is fatal and the job moves to its fallback."""


class PartnerAdapter(ABC):
    """Builds the partner's request and reads its response; the HTTP exchange and classification are shared."""

    def __init__(self, config: PartnerConfig, http: HttpPool) -> None:
        self.config = config
        self.http = http
        self.api_key = config.resolved_api_key()

    @abstractmethod
    def endpoint(self) -> str: ...

    @abstractmethod
    def headers(self) -> dict[str, str]: ...

    @abstractmethod
    def body(self, request: CallRequest) -> dict[str, Any]: ...

    @abstractmethod
    def read_success(self, body: dict[str, Any]) -> tuple[str, Usage]:
        """The output text and the usage the partner reported; raise ValueError on an unreadable body,
        PartnerRefused when the partner declined the prompt."""

    def read_ending(self, body: dict[str, Any]) -> Ending:
        """Why the partner stopped, and the tool calls it asked for (read after read_success)."""
        return Ending()

    def retry_after_in_body(self, body: Any) -> float | None:
        """Seconds to wait, for partners that say it in the error body rather than in a header."""
        return None

    # Streaming (gateway_core.partners.adapters.streamed drives these): an adapter that can ask its partner for
    # a stream says so, and reads one server-sent event at a time.
    supports_streaming = False

    def stream_endpoint(self) -> str:
        return self.endpoint()

    def stream_body(self, request: CallRequest) -> dict[str, Any]:
        """The request body asking the partner to stream its answer."""
        raise NotImplementedError

    def read_stream_event(self, event: SseEvent, progress: StreamProgress) -> str:
        """The text this event adds ('' for none); usage, finish reason and the end of the stream go into
        `progress`. Raise ValueError on an unreadable event, PartnerRefused, or StreamError for an error event."""
        raise NotImplementedError

    async def call(self, request: CallRequest) -> PartnerResponse:
        """One exchange with the partner, always ending in an outcome the router understands.

        The whole exchange (connect, send, wait, read) has one deadline, `timeout_s`: per-read timeouts alone let a
        partner that drips a byte at a time hold the call forever."""
        deadline_s = self.config.timeout_s
        try:
            content = json.dumps(self.body(request))
            headers = {"content-type": "application/json", **self.headers()}
            async with asyncio.timeout(deadline_s):
                response = await self.http.client().post(self.endpoint(), content=content, headers=headers,
                                                         timeout=deadline_s)
        except (TimeoutError, httpx.TimeoutException):
            return PartnerResponse(Outcome.RETRYABLE, error=f"timed out after {deadline_s:g}s")
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        except UnsupportedOption as exc:  # names the field only: this partner cannot honour the request
            return PartnerResponse(Outcome.FATAL, error=str(exc))
        except Exception as exc:  # an adapter bug or an input it cannot express: this partner cannot take it
            return PartnerResponse(Outcome.FATAL, error=f"could not build the request ({exc.__class__.__name__})")
        return self.interpret(response.status_code, response.content, response.headers)

    def interpret(self, status_code: int, content: bytes, headers: httpx.Headers) -> PartnerResponse:
        outcome = classify_status(status_code)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        body = _json_or_none(content)
        if outcome is not Outcome.OK:
            described = f" ({content_type} body)" if body is None and content_type else ""
            fallback = f"partner returned an error{described}"
            return PartnerResponse(
                outcome,
                status_code=status_code,
                retry_after_s=parse_retry_after(headers) or self.retry_after_in_body(body),
                error=f"HTTP {status_code}: {_error_message(body, fallback)}",
            )
        if not isinstance(body, dict):
            what = "not JSON" if body is None else "JSON but not an object"
            shown = f", content-type {content_type}" if content_type else ""
            return PartnerResponse(
                Outcome.RETRYABLE, status_code=status_code, error=f"malformed response body ({what}{shown})"
            )
        try:
            text, usage = self.read_success(body)
            ending = self.read_ending(body)
        except PartnerRefused as exc:
            return PartnerResponse(Outcome.FATAL, status_code=status_code, error=f"partner refused: {exc}")
        except Exception as exc:
            return PartnerResponse(
                Outcome.RETRYABLE, status_code=status_code, error=f"unreadable response: {exc.__class__.__name__}"
            )
        return PartnerResponse(Outcome.OK, status_code=status_code, text=text, usage=usage, raw=body,
                               finish_reason=ending.finish_reason, tool_calls=ending.tool_calls,
                               logprobs=ending.logprobs)


@dataclass(frozen=True)
class Ending:
    finish_reason: str | None = None
    tool_calls: list[ToolCall] | None = None
    logprobs: dict[str, Any] | None = None


def _json_or_none(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested deeper than the parser goes
        return None


def transport_failure(exc: httpx.HTTPError) -> PartnerResponse:
    """What a failure on the wire means for the job. Fatal only where trying again cannot help."""
    if isinstance(exc, TLSFailure):
        return PartnerResponse(Outcome.FATAL, error=f"TLS error: {exc}")
    if isinstance(exc, ResponseTooLarge):
        return PartnerResponse(Outcome.FATAL, error=str(exc))
    if isinstance(exc, httpx.DecodingError):
        return PartnerResponse(Outcome.RETRYABLE, error="undecodable response body (Content-Encoding)")
    if isinstance(exc, httpx.TransportError):
        return PartnerResponse(Outcome.RETRYABLE, error=f"connection error: {exc.__class__.__name__} ({exc})")
    return PartnerResponse(Outcome.RETRYABLE, error=f"HTTP client error: {exc.__class__.__name__}")


class HttpPool:
    """The process's HTTP client for partner calls: httpx's API over aiohttp's connection pool.

    httpcore's pool scans every connection on each request and response (py-spy: ~70% of a worker's CPU at
    1,000 connections; ~2 ms of CPU per request even in shards of 32). The aiohttp-backed transport costs ~0.4 ms
    per request through the same httpx client API (gateway_core/partners/adapters/transport.py).
    """

    def __init__(self, max_connections: int, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(max_connections, max_response_bytes), timeout=httpx.Timeout(60.0, connect=10.0)
        )

    def client(self) -> httpx.AsyncClient:
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()
