"""Per request: a log context (the job id when the path names one) and, with tracing on, a server span.

A pure ASGI middleware: with tracing off it costs one context-variable set and reset per request. A caller's own
W3C traceparent is continued, so an app that traces can follow its job into the fleet.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_core.fleet import logs, tracing

JOBS_PATH = "/v1/jobs/"
UNTRACED = frozenset({"/healthz", "/metrics"})  # probes and scrapes: a trace each would drown the real ones


def install(app: FastAPI) -> None:
    app.add_middleware(RequestTelemetry)


def _job_in_path(path: str) -> str | None:
    if not path.startswith(JOBS_PATH):
        return None
    job_id = path[len(JOBS_PATH):].partition("/")[0]
    return job_id if job_id.startswith("job_") else None


class RequestTelemetry:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = logs.bind(logs.LogContext(job_id=_job_in_path(scope["path"])))
        try:
            if tracing.enabled() and scope["path"] not in UNTRACED:
                await self._traced(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            logs.unbind(bound)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        parent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"), None)
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": scope["path"]}
        with tracing.span(method, attributes, kind=SpanKind.SERVER, parent=parent) as current:

            async def send_noting_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_noting_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:  # the template, e.g. /v1/jobs/{job_id}: one span name per endpoint, not per job
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
