"""`x-request-id` on every answer, as OpenAI's API sends it: the caller's own id when it sent a usable one (so a
request can be followed through a proxy chain), else a new one. Support can ask for it; it is logged with errors.

Outermost of the app's middleware, so refusals by the key/size guard carry it too, and an unexpected exception
still gets an answer in OpenAI's error shape (type `server_error`) with the id, instead of a bare text 500.
"""

from __future__ import annotations

import json
import logging
import re
import secrets

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_api.deps import error_body

HEADER = b"x-request-id"
_USABLE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
log = logging.getLogger("fedgate.api")


def request_id_of(scope: Scope) -> str:
    sent = next((value for name, value in scope["headers"] if name == HEADER), None)
    if sent is not None and _USABLE.match(sent):
        return sent.decode("ascii")
    return "req_" + secrets.token_hex(12)


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("request %s failed: internal error (%s)", request_id, exc.__class__.__name__)
            if started:
                raise
            body = json.dumps(error_body(f"internal error; quote request id {request_id} when reporting it",
                                         "internal_error", status=500)).encode()
            await send({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (HEADER, request_id.encode("ascii"))]})
            await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    """Call last: the middleware added last is the outermost."""
    app.add_middleware(RequestId)
