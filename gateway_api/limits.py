"""Guards that run before a route reads its body: the API key (headers only), then the body's size.

FastAPI reads and parses a request's body before it resolves the route's dependencies, so without this an
unauthenticated client could make the API read and parse any amount of data before its 401. `RequestGuard` is a
pure ASGI middleware, so for every request:

1. On `/v1/...` paths the `Authorization` header is checked against the config in use; a missing or unknown key is
   answered 401 and the body is never read. (The routes' own `Tenant` dependency checks it again, with the same
   services pinned for the request, so both see the same config across a reload.)
2. A `Content-Length` over the route's limit is answered 413 before any of the body is read.
3. A body sent without a length (chunked) is counted as it arrives: once it passes the limit the route's reading
   stops with `BodyTooLarge`, nothing more is read or kept, and the answer is a 413, whatever the route was doing.

Limits: `Settings.json_body_limit()` for JSON endpoints (derived from FEDGATE_MAX_PROMPT_CHARS unless
FEDGATE_MAX_JSON_BODY_BYTES is set); uploads (`POST /v1/files`) the file limit FEDGATE_MAX_BATCH_FILE_BYTES plus
room for the multipart framing. Every refusal is in OpenAI's error shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_api.deps import authenticate, error_body, services
from gateway_core.errors import RequestError
from gateway_core.settings import Settings

AUTHENTICATED_PREFIX = "/v1/"
UPLOAD_ROUTES = frozenset({("POST", "/v1/files")})
MULTIPART_SLACK = 64 * 1024  # the form's other fields and the boundaries around the file


class BodyTooLarge(Exception):
    """Raised from `receive` once a body passes its limit; the guard answers 413 in place of the route."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


@dataclass
class _Flow:
    received: int = 0
    exceeded: bool = False
    started: bool = False


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.json_limit = settings.json_body_limit()
        self.upload_limit = settings.max_batch_file_bytes + MULTIPART_SLACK

    def limit_for(self, method: str, path: str) -> int:
        return self.upload_limit if (method, path.rstrip("/")) in UPLOAD_ROUTES else self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if path.startswith(AUTHENTICATED_PREFIX):
            refused = self._authenticate(scope)
            if refused is not None:
                await _answer(send, refused, {"www-authenticate": "Bearer"})
                return
        limit = self.limit_for(method, path)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _answer(send, self._too_large(method, path, limit, declared=int(declared)))
            return
        flow = _Flow()

        async def limited_receive() -> Message:
            if flow.exceeded:  # the route asked again after the cut: it gets nothing more
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                flow.received += len(message.get("body", b""))
                if flow.received > limit:
                    flow.exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            if flow.exceeded and not flow.started:
                return  # the route's answer to a body it could not finish reading: replaced by the 413 below
            if message["type"] == "http.response.start":
                flow.started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if flow.started:
                raise
        if flow.exceeded and not flow.started:
            await _answer(send, self._too_large(method, path, limit, declared=None))

    def _authenticate(self, scope: Scope) -> RequestError | None:
        request = Request(scope)
        try:
            services(request)  # pins this request's services (config) for the route's own key check
        except AttributeError:  # not started yet: let the app answer
            return None
        try:
            authenticate(request, request.headers.get("authorization"))
        except RequestError as exc:
            return exc
        return None

    def _too_large(self, method: str, path: str, limit: int, *, declared: int | None) -> RequestError:
        size = f"is {declared} bytes" if declared is not None else f"is over {limit} bytes"
        if (method, path.rstrip("/")) in UPLOAD_ROUTES:
            return RequestError(
                413, f"the upload {size}; uploads may be at most {limit} bytes (a file of "
                f"{limit - MULTIPART_SLACK} bytes, FEDGATE_MAX_BATCH_FILE_BYTES, plus the form): split the file",
                "file_too_large", "file")
        return RequestError(
            413, f"the request body {size}; {method} {path} takes at most {limit} bytes "
            "(FEDGATE_MAX_JSON_BODY_BYTES, derived from FEDGATE_MAX_PROMPT_CHARS): shorten the request",
            "request_too_large")


async def _answer(send: Send, error: RequestError, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(error.message, error.code, error.param, status=error.status_code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(RequestGuard, settings=settings)
