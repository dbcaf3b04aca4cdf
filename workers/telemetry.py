"""A worker's logs and traces: Celery's logging through fedgate's handler, the job span and the stage spans.

One run of a job lives in two contexts: Celery's task trace runs in a greenlet, the pipeline in the pool's asyncio
task (see workers.bridge). `job_run` binds one LogContext in both, so Celery's own "Task ... succeeded" line,
logged in the greenlet after the pipeline returns, carries the job id and the job span's trace id too.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery.signals import celeryd_init, setup_logging, worker_init, worker_shutdown
from greenlet import getcurrent
from opentelemetry.trace import Span, SpanKind

from gateway_core.fleet import logs, tracing
from workers.bridge import TaskGreenlet

JOB_SPAN = "fedgate.job"
RunJob = Callable[[str, str, int], Coroutine[Any, Any, str]]


@celeryd_init.connect
def _configure_logging_early(options: Mapping[str, Any] | None = None, **_: Any) -> None:
    """Before the worker's start-up hooks log anything."""
    logs.configure_logging("worker", level=(options or {}).get("loglevel"))


@setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Connected, so Celery leaves the root logger alone and its own lines go through fedgate's formatter."""
    logs.configure_logging("worker", level=loglevel)


@worker_init.connect
def _configure_tracing(**_: Any) -> None:
    tracing.configure_tracing("worker")


@worker_shutdown.connect
def _flush_spans(**_: Any) -> None:
    tracing.shutdown_tracing()


@dataclass(slots=True)
class _Run:
    job_id: str
    partner: str
    attempt: int
    started_ns: int
    span: Span | None = None
    token: Token[Any] | None = None


_run: ContextVar[_Run | None] = ContextVar("fedgate_job_run", default=None)


def job_run(fn: RunJob) -> RunJob:
    """Decorate the pipeline's entry: log context for the run, and (tracing on) the job span `job_claimed` opens."""

    @functools.wraps(fn)
    def start(job_id: str, partner: str, attempt: int) -> Coroutine[Any, Any, str]:
        context = logs.LogContext(job_id=job_id)
        if isinstance(getcurrent(), TaskGreenlet):
            logs.bind(context)  # the task's greenlet, and its context, end with the task: nothing to reset
        return _run_job(fn, context, job_id, partner, attempt)

    return start


async def _run_job(fn: RunJob, context: logs.LogContext, job_id: str, partner: str, attempt: int) -> str:
    bound = logs.bind(context)
    if not tracing.enabled():
        try:
            return await fn(job_id, partner, attempt)
        finally:
            logs.unbind(bound)
    run = _Run(job_id, partner, attempt, time.time_ns())
    marker = _run.set(run)
    try:
        result = await fn(job_id, partner, attempt)
        if run.span is not None:
            run.span.set_attribute("fedgate.result", result)
        return result
    except Exception as exc:
        if run.span is not None:
            tracing.mark_failed(run.span, exc)
        raise
    finally:
        if run.span is not None:
            if run.token is not None:
                tracing.deactivate(run.token)
            run.span.end()
        _run.reset(marker)
        logs.unbind(bound)


def job_claimed(raw: Mapping[str, str]) -> None:
    """Open the run's span once the claim returned the record: a child of the submit request's stored context."""
    if not tracing.enabled():
        return
    run = _run.get()
    if run is None or run.span is not None:
        return
    attributes: dict[str, str | int] = {"fedgate.job_id": run.job_id, "fedgate.partner": run.partner,
                                        "fedgate.attempt": run.attempt, "fedgate.tenant": raw.get("tenant", "?")}
    if raw.get("batch_id"):
        attributes["fedgate.batch_id"] = raw["batch_id"]
    run.span = tracing.start_job_span(JOB_SPAN, run.job_id, raw.get(tracing.TRACEPARENT), attributes,
                                      run.started_ns)
    run.token = tracing.activate(run.span)
    context, ids = logs.current(), run.span.get_span_context()
    if context is not None:
        context.trace_id, context.span_id = format(ids.trace_id, "032x"), format(ids.span_id, "016x")


def _call_attributes(args: tuple[Any, ...], response: Any) -> dict[str, str | int]:
    """Method, host, status and outcome; never the URL's path or query, which some partners put keys in."""
    partner = args[0].partner
    url = urlsplit(partner.base_url)
    attributes: dict[str, str | int] = {"http.request.method": "POST", "server.address": url.hostname or "",
                                        "fedgate.partner": partner.name, "fedgate.outcome": str(response.outcome)}
    if url.port:
        attributes["server.port"] = url.port
    if response.status_code is not None:
        attributes["http.response.status_code"] = response.status_code
    return attributes


def _decision(_: tuple[Any, ...], result: Any) -> dict[str, str]:
    return {"fedgate.decision": str(result)}


partner_call = tracing.traced("partner.call", _call_attributes, kind=SpanKind.CLIENT)
route_failure = tracing.traced("route_failure", _decision)
redact = tracing.traced("redact")
budget = tracing.traced("budget")
budget_wait = tracing.traced("budget.wait")
contract_check = tracing.traced("contract")


def publish() -> contextlib.AbstractContextManager[Span]:
    return tracing.span("publish")
