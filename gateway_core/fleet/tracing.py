"""OpenTelemetry traces: the API request, the worker's run of the job and the partner call, one trace per job.

Only the OpenTelemetry API is a base dependency; the SDK and the OTLP exporter come with the `otel` extra
(`pip install 'fedgate[otel]'`) and are imported when tracing is turned on, never otherwise.
`FEDGATE_OTEL_EXPORTER=none` (the default) installs no SDK TracerProvider. Every helper here then returns after
one check of the module flag `_enabled`: a decorated stage costs one extra function call, `span()` hands back a
shared no-op context manager, and nothing is allocated. `console` prints one JSON span a line on stdout; `otlp`
sends OTLP/HTTP to `FEDGATE_OTEL_ENDPOINT`, else to where the standard `OTEL_EXPORTER_OTLP_*` variables say.

The trace context travels with the job record (a W3C `traceparent` field in its Redis hash, stored at submit),
not in the Celery message: a retry, a fallback, a budget wait or a replay is a new message, sent by whichever
process moves the job, and every one of them reads the same record, so every attempt joins the submit request's
trace. The claim script already returns the record's fields, so this costs no extra round trip. A job stored
without one (a batch line) gets a trace id derived from its job id, so its attempts still share one trace.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from gateway_core.errors import ConfigError
from gateway_core.settings import Settings, get_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

F = TypeVar("F", bound=Callable[..., Any])
Attributes = Mapping[str, AttributeValue]
AttributesOf = Callable[[tuple[Any, ...], Any], Attributes]

TRACEPARENT = "traceparent"
OTLP_TRACES_PATH = "/v1/traces"
OTEL_EXTRA_HINT = "install the otel extra (pip install 'fedgate[otel]'), or set FEDGATE_OTEL_EXPORTER=none"
_EXPORTER_MODULES = {
    "console": ("opentelemetry.sdk.trace",),
    "otlp": ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
}

_enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()
_NOOP = contextlib.nullcontext(trace.INVALID_SPAN)  # stateless, so one instance serves every caller
_wanted_trace_id: ContextVar[int] = ContextVar("fedgate_wanted_trace_id", default=0)


def enabled() -> bool:
    return _enabled


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def missing_exporter_packages(settings: Settings) -> str | None:
    """What the configured exporter needs and this environment lacks, said for the operator; None when all there.
    Processes check it before they start, so a missing extra is one line at start-up, not a trace-less fleet."""
    missing = [m for m in _EXPORTER_MODULES.get(settings.otel_exporter, ()) if not _installed(m)]
    if not missing:
        return None
    return (f"FEDGATE_OTEL_EXPORTER={settings.otel_exporter} needs {', '.join(missing)}, which is not installed: "
            f"{OTEL_EXTRA_HINT}")


def configure_tracing(service: str, settings: Settings | None = None, *,
                      exporter: SpanExporter | None = None) -> bool:
    """Install the SDK for this process when an exporter is configured (or given, in tests). True when on.
    ConfigError when the configured exporter's packages (the `otel` extra) are not installed."""
    global _enabled, _tracer, _provider
    settings = settings or get_settings()
    if exporter is None and settings.otel_exporter == "none":
        return False
    problem = None if exporter is not None else missing_exporter_packages(settings)
    if problem:
        raise ConfigError(problem)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    shutdown_tracing()
    provider = TracerProvider(resource=Resource.create({"service.name": f"fedgate-{service}"}),
                              id_generator=_job_id_generator())
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        # Batched: spans leave on a background thread (OTEL_BSP_* tune it), never in the request or the job.
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    _provider, _tracer, _enabled = provider, provider.get_tracer("fedgate"), True
    return True


def shutdown_tracing() -> None:
    """Flush and stop this process's spans (tests, and a worker's shutdown); tracing is off afterwards."""
    global _enabled, _tracer, _provider
    provider, _provider = _provider, None
    _enabled, _tracer = False, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def _exporter(settings: Settings) -> SpanExporter:
    if settings.otel_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # One span a line, so the process's output stays line-oriented next to its JSON logs.
        return ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + os.linesep)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = settings.otel_endpoint
    if endpoint and not endpoint.rstrip("/").endswith(OTLP_TRACES_PATH):
        endpoint = endpoint.rstrip("/") + OTLP_TRACES_PATH
    return OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()


def _job_id_generator() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class JobIdGenerator(RandomIdGenerator):
        """Random ids, except a root span opened for a job without a stored traceparent: its job's trace id."""

        def generate_trace_id(self) -> int:
            return _wanted_trace_id.get() or super().generate_trace_id()

    return JobIdGenerator()


def job_trace_id(job_id: str) -> int:
    return int(hashlib.sha256(job_id.encode()).hexdigest()[:32], 16) or 1


def span(name: str, attributes: Attributes | None = None, *, kind: SpanKind = SpanKind.INTERNAL,
         parent: str | None = None) -> contextlib.AbstractContextManager[trace.Span]:
    """A span around a block, current inside it; `parent` is a W3C traceparent to continue. Off: a no-op."""
    if not _enabled:
        return _NOOP
    return _recording(name, attributes, kind, parent)


@contextlib.contextmanager
def _recording(name: str, attributes: Attributes | None, kind: SpanKind, parent: str | None) -> Iterator[trace.Span]:
    context = _propagator.extract({TRACEPARENT: parent}) if parent else None
    with _tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as current:
        try:
            yield current
        except Exception as exc:
            mark_failed(current, exc)
            raise


def mark_failed(current: trace.Span, exc: BaseException) -> None:
    """The exception's class only: its text may quote data (a validation error shows the input)."""
    current.set_status(Status(StatusCode.ERROR, exc.__class__.__name__))
    current.set_attribute("error.type", exc.__class__.__name__)


def traced(name: str, attributes: AttributesOf | None = None, *, kind: SpanKind = SpanKind.INTERNAL
           ) -> Callable[[F], F]:
    """Decorate a stage (sync or async) with a span; `attributes(args, result)` adds what the result tells."""

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                if not _enabled:
                    return await fn(*args, **kwargs)
                with _recording(name, None, kind, None) as current:
                    result = await fn(*args, **kwargs)
                    if attributes is not None:
                        current.set_attributes(attributes(args, result))
                    return result

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not _enabled:
                return fn(*args, **kwargs)
            with _recording(name, None, kind, None) as current:
                result = fn(*args, **kwargs)
                if attributes is not None:
                    current.set_attributes(attributes(args, result))
                return result

        return cast(F, run)

    return decorate


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None (tracing off, or no span)."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def stamp_job(fields: dict[str, str], job_id: str) -> None:
    """At submit: name the job on the request's span and keep the span's context with the job's stored fields."""
    if not _enabled:
        return
    trace.get_current_span().set_attribute("fedgate.job_id", job_id)
    parent = current_traceparent()
    if parent:
        fields[TRACEPARENT] = parent


def start_job_span(name: str, job_id: str, parent: str | None, attributes: Attributes,
                   start_time: int | None = None) -> trace.Span:
    """A span for one run of a job: a child of the stored submit context, else a root in the job's own trace.
    The caller ends it (see workers.telemetry); call only when tracing is on."""
    if parent:
        return _tracer.start_span(name, context=_propagator.extract({TRACEPARENT: parent}), kind=SpanKind.CONSUMER,
                                  attributes=attributes, start_time=start_time, record_exception=False,
                                  set_status_on_exception=False)
    token = _wanted_trace_id.set(job_trace_id(job_id))
    try:
        return _tracer.start_span(name, context=otel_context.Context(), kind=SpanKind.CONSUMER,
                                  attributes=attributes, start_time=start_time, record_exception=False,
                                  set_status_on_exception=False)
    finally:
        _wanted_trace_id.reset(token)


def activate(current: trace.Span) -> Token[Any]:
    """Make a span current in this context until `deactivate`; for spans that outlive one block."""
    return cast(Token[Any], otel_context.attach(trace.set_span_in_context(current)))


def deactivate(token: Token[Any]) -> None:
    otel_context.detach(token)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span as hex, for log lines; None when off or outside a span."""
    if not _enabled:
        return None
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")
