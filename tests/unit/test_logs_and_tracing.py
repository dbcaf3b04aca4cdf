"""Issue 7: JSON log lines with job and trace context, secrets masked; tracing off costs nothing, on joins one trace."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gateway_api import telemetry as api_telemetry
from gateway_core.fleet import logs, tracing
from gateway_core.settings import Settings
from workers import telemetry

TEST_CONFIG = Path(__file__).resolve().parent.parent / "fleet_config.yaml"
JOB = "job_0123456789abcdef01234567"


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FEDGATE_SIMULATOR_URL", "http://127.0.0.1:9")
    (tmp_path / "dev-api-key").write_text("test-key-dev-secret\n")
    return Settings(home=tmp_path, config=TEST_CONFIG, log_format="json", otel_exporter="none")


@pytest.fixture()
def captured(settings: Settings) -> Iterator[io.StringIO]:
    """The root logger routed through configure_logging into a buffer; the previous set-up restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure_logging("worker", settings, stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture()
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing("test", settings, exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_json_line_shape_and_job_context(captured: io.StringIO) -> None:
    log = logging.getLogger("fedgate.test")
    log.info("outside any job")
    bound = logs.bind(logs.LogContext(job_id=JOB))
    try:
        log.warning("attempt %d of %s", 2, "sim-openai")
    finally:
        logs.unbind(bound)
    outside, inside = lines(captured)
    assert list(outside)[:5] == ["timestamp", "level", "logger", "message", "service"]
    assert outside["timestamp"].endswith("Z") and outside["level"] == "INFO" and outside["service"] == "worker"
    assert "job_id" not in outside and "trace_id" not in outside  # tracing is off: no trace ids
    assert inside["message"] == "attempt 2 of sim-openai" and inside["logger"] == "fedgate.test"
    assert inside["job_id"] == JOB


def test_text_format_for_humans(settings: Settings) -> None:
    stream = io.StringIO()
    handler = logs.configure_logging("api", settings.model_copy(update={"log_format": "text"}), stream=stream)
    try:
        bound = logs.bind(logs.LogContext(job_id=JOB))
        logging.getLogger("fedgate.test").error("hello")
        logs.unbind(bound)
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue().strip()
    assert line.endswith(f"ERROR api fedgate.test [job_id={JOB}] hello")
    assert not line.startswith("{")


def test_bad_level_names_the_setting(settings: Settings) -> None:
    with pytest.raises(ValueError, match="FEDGATE_LOG_LEVEL"):
        logs.configure_logging("api", settings.model_copy(update={"log_level": "loud"}), stream=io.StringIO())


def test_secrets_are_masked_wherever_they_appear(captured: io.StringIO) -> None:
    log = logging.getLogger("fedgate.test")
    log.info("partner key %s, tenant keys %s and %s", "sk-sim-test", "test-key-other", "test-key-dev-secret")
    log.info("header Authorization: Bearer abc.DEF-123 and bearer xyz", extra={"data": {"key": "sk-ant-test"}})
    log.info("webhook secret whsec_c2VjcmV0 and sk-proj-AbCdEf0123; task-12345 is not a key")
    try:
        raise RuntimeError("upstream said: invalid key sk-ant-test")
    except RuntimeError:
        log.exception("call failed")
    text = captured.getvalue()
    for secret in ("sk-sim-test", "sk-ant-test", "test-key-other", "test-key-dev-secret", "abc.DEF-123", "xyz",
                   "whsec_c2VjcmV0", "sk-proj-AbCdEf0123"):
        assert secret not in text
    first, second, third, failed = lines(captured)
    assert first["message"] == "partner key ***, tenant keys *** and ***"
    assert second["message"] == "header Authorization: Bearer *** and bearer ***"
    assert second["data"] == {"key": "***"}
    assert third["message"].endswith("task-12345 is not a key")
    assert "RuntimeError" in failed["exc_info"] and "***" in failed["exc_info"]


def test_known_secrets_come_from_the_config_and_home(settings: Settings) -> None:
    found = logs.known_secrets(settings)
    assert {"sk-sim-test", "sk-ant-test", "test-key-other", "test-key-dev-secret"} <= set(found)


def test_tracing_off_installs_nothing_and_costs_a_flag_check(settings: Settings) -> None:
    assert tracing.configure_tracing("test", settings) is False
    assert not tracing.enabled()
    assert not isinstance(trace.get_tracer_provider(), SdkTracerProvider)
    assert tracing.span("a") is tracing.span("b")  # one shared no-op, nothing allocated per call
    with tracing.span("a") as current:
        current.set_attribute("ignored", 1)
    fields = {"status": "queued"}
    tracing.stamp_job(fields, JOB)
    assert fields == {"status": "queued"}
    assert tracing.current_traceparent() is None and tracing.current_ids() is None

    @tracing.traced("stage")
    def stage(value: int) -> int:
        return value + 1

    assert stage(1) == 2


def test_stamped_submit_context_parents_every_attempt(spans: InMemorySpanExporter, captured: io.StringIO) -> None:
    fields: dict[str, str] = {}
    with tracing.span("POST /v1/jobs"):
        tracing.stamp_job(fields, JOB)
    submit = by_name(spans)["POST /v1/jobs"]
    assert submit.attributes and submit.attributes["fedgate.job_id"] == JOB
    assert fields["traceparent"].split("-")[1] == format(submit.context.trace_id, "032x")

    async def attempt(job_id: str, partner: str, attempt: int) -> str:
        telemetry.job_claimed({"tenant": "dev", "traceparent": fields["traceparent"], "status": "running"})
        logging.getLogger("fedgate.test").info("inside the job")
        await stage()
        return "retry" if attempt == 1 else "succeeded"

    @tracing.traced("redact")
    async def stage() -> None:
        logging.getLogger("fedgate.test").info("inside a stage")

    run = telemetry.job_run(attempt)
    assert asyncio.run(run(JOB, "sim-openai", 1)) == "retry"
    assert asyncio.run(run(JOB, "sim-anthropic", 2)) == "succeeded"
    jobs = [s for s in spans.get_finished_spans() if s.name == telemetry.JOB_SPAN]
    assert [s.attributes["fedgate.attempt"] for s in jobs if s.attributes] == [1, 2]
    for job in jobs:
        assert job.context.trace_id == submit.context.trace_id
        assert job.parent is not None and job.parent.span_id == submit.context.span_id
        assert job.attributes and job.attributes["fedgate.tenant"] == "dev" and job.attributes["fedgate.job_id"] == JOB
    assert jobs[1].attributes and jobs[1].attributes["fedgate.result"] == "succeeded"
    trace_id = format(submit.context.trace_id, "032x")
    logged = [line for line in lines(captured) if line["message"].startswith("inside")]
    assert len(logged) == 4 and all(line["job_id"] == JOB and line["trace_id"] == trace_id for line in logged)
    redacts = [s for s in spans.get_finished_spans() if s.name == "redact"]
    assert {line["span_id"] for line in logged if line["message"] == "inside a stage"} == {
        format(s.context.span_id, "016x") for s in redacts}


def test_a_job_without_a_stored_context_still_has_one_trace(spans: InMemorySpanExporter) -> None:
    async def attempt(job_id: str, partner: str, attempt: int) -> str:
        telemetry.job_claimed({"tenant": "dev", "batch_id": "batch_1"})
        return "succeeded"

    run = telemetry.job_run(attempt)
    asyncio.run(run(JOB, "sim-openai", 1))
    asyncio.run(run(JOB, "sim-openai", 2))
    first, second = spans.get_finished_spans()
    assert first.context.trace_id == second.context.trace_id == tracing.job_trace_id(JOB)
    assert first.parent is None and first.attributes and first.attributes["fedgate.batch_id"] == "batch_1"
    asyncio.run(run("job_other", "sim-openai", 1))
    assert spans.get_finished_spans()[-1].context.trace_id != first.context.trace_id


def test_partner_call_span_names_host_status_and_outcome_only(spans: InMemorySpanExporter) -> None:
    from types import SimpleNamespace

    from gateway_core.partners.adapters.base import Outcome, PartnerResponse

    ctx = SimpleNamespace(partner=SimpleNamespace(name="sim-openai", base_url="https://api.example.com:8443/v1?key=x"))

    @telemetry.partner_call
    async def call(ctx: object) -> PartnerResponse:
        return PartnerResponse(Outcome.RETRYABLE, 503, text="secret output")

    assert asyncio.run(call(ctx)).status_code == 503
    span = by_name(spans)["partner.call"]
    assert span.kind is trace.SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST", "server.address": "api.example.com", "server.port": 8443,
        "http.response.status_code": 503, "fedgate.outcome": "retryable", "fedgate.partner": "sim-openai",
    }


def test_a_failing_stage_records_the_error_class_not_its_text(spans: InMemorySpanExporter) -> None:
    @tracing.traced("contract")
    def check() -> None:
        raise ValueError("alice@example.org is not valid")

    with pytest.raises(ValueError):
        check()
    span = by_name(spans)["contract"]
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "ValueError"
    assert not span.events
    assert "alice" not in json.dumps(span.to_json())


def test_api_requests_get_a_server_span_and_the_job_in_the_log_context(spans: InMemorySpanExporter) -> None:
    app = FastAPI()
    api_telemetry.install(app)
    seen: list[logs.LogContext | None] = []

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, str]:
        seen.append(logs.current())
        return {"id": job_id}

    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    with TestClient(app) as client:
        assert client.get(f"/v1/jobs/{JOB}", headers={"traceparent": caller}).status_code == 200
        assert client.get("/v1/jobs/job_missing/cancel").status_code == 404
    assert seen[0] is not None and seen[0].job_id == JOB
    served = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert served[0].name == "GET /v1/jobs/{job_id}"
    assert served[0].attributes and served[0].attributes["http.response.status_code"] == 200
    assert format(served[0].context.trace_id, "032x") == "ab" * 16  # the caller's trace is continued
    assert served[1].name == "GET" and served[1].attributes and served[1].attributes["http.response.status_code"] == 404


def test_otlp_endpoint_is_the_collector_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = tracing._exporter(Settings(otel_exporter="otlp", otel_endpoint="http://collector:4318/"))
    assert isinstance(exporter, OTLPSpanExporter) and exporter._endpoint == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")
    assert tracing._exporter(Settings(otel_exporter="otlp"))._endpoint == "http://other:4318/v1/traces"
