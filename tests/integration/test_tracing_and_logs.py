"""Issue 7: one trace per job from the API request through the worker to the partner call; JSON logs carrying the
job and trace ids; and neither logs nor spans holding seeded PII or any configured key, on every path."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import FleetEnv, Proc, RedisDatabases, free_port, http_ok, start_fleet, wait_for
from tests.integration.test_no_pii_leaks import configured_secrets, finish, leaks, run_every_path

pytestmark = pytest.mark.fleet


@dataclass
class TracedFleet:
    procs: FleetEnv
    api: Proc
    worker: Proc
    client: httpx.Client


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_databases: RedisDatabases) -> Iterator[FleetEnv]:
    """A simulator and an API of this module's own, on a Redis database of its own: partners fail here and
    sim-openai's breaker opens, which no other module sees."""
    own = start_fleet(tmp_path_factory.mktemp("traced-home"), redis_databases.url())
    yield own
    own.stop_all()


@pytest.fixture(scope="module")
def traced(fleet: FleetEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedFleet]:
    """An API and a worker with console spans, sharing the module fleet's Redis, home and simulator."""
    port = free_port()
    env = {**fleet.env, "FEDGATE_API_PORT": str(port), "FEDGATE_API_URL": f"http://127.0.0.1:{port}",
           "FEDGATE_OTEL_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    procs = FleetEnv(tmp_path_factory.mktemp("traced-fleet"), env)
    api = procs.spawn("api", "api")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz") or api.process.poll() is not None, 30,
             what="traced api")
    assert api.process.poll() is None, api.output()[-3000:]
    worker = procs.start_worker("sim-openai,sim-anthropic")
    with httpx.Client(base_url=env["FEDGATE_API_URL"], headers={"authorization": "Bearer test-key-dev"},
                      timeout=60) as client:
        yield TracedFleet(procs, api, worker, client)
    procs.stop_all()


def json_lines(proc: Proc) -> list[dict]:
    found = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):  # a line that merely starts with a brace
                found.append(json.loads(line))
    return found


def spans(proc: Proc) -> list[dict]:
    return [line for line in json_lines(proc) if "context" in line and "parent_id" in line]


def log_lines(proc: Proc) -> list[dict]:
    return [line for line in json_lines(proc) if "level" in line and "message" in line]


def trace_of(span: dict) -> str:
    return str(span["context"]["trace_id"]).removeprefix("0x")


def test_one_trace_from_the_request_through_the_worker_to_the_partner(traced: TracedFleet) -> None:
    accepted = traced.client.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "Trace me"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert finish(traced.client, job_id)["status"] == "succeeded"

    def submit_span() -> dict | None:
        return next((s for s in spans(traced.api) if s["attributes"].get("fedgate.job_id") == job_id), None)

    def worker_spans() -> list[dict] | None:
        found = [s for s in spans(traced.worker) if submit and trace_of(s) == trace_of(submit)]
        return found if {"fedgate.job", "partner.call", "publish"} <= {s["name"] for s in found} else None

    submit = wait_for(submit_span, 30, what="the API's span for the submit request")
    assert submit["name"] == "POST /v1/jobs" and submit["kind"] == "SpanKind.SERVER"
    assert submit["attributes"]["http.response.status_code"] == 202
    found = {s["name"]: s for s in wait_for(worker_spans, 30, what="the worker's spans in the request's trace")}
    job, call = found["fedgate.job"], found["partner.call"]
    assert job["parent_id"] == submit["context"]["span_id"]  # the stored traceparent reached the worker
    assert job["attributes"] == {"fedgate.job_id": job_id, "fedgate.partner": "sim-openai", "fedgate.attempt": 1,
                                 "fedgate.tenant": "dev", "fedgate.result": "succeeded"}
    assert {"redact", "budget", "partner.call", "publish"} <= set(found)
    for stage in ("redact", "budget", "partner.call", "publish"):
        assert found[stage]["parent_id"] == job["context"]["span_id"], stage
    assert call["kind"] == "SpanKind.CLIENT"
    assert call["attributes"]["http.response.status_code"] == 200
    assert call["attributes"]["server.address"] == "127.0.0.1" and call["attributes"]["fedgate.outcome"] == "ok"

    trace_id = trace_of(submit)
    mine = [line for line in log_lines(traced.worker) if line.get("job_id") == job_id]
    assert mine, "no worker log line names the job"
    assert all(line["trace_id"] == trace_id and line["service"] == "worker" for line in mine)
    assert any(line["logger"] == "celery.app.trace" and "succeeded" in line["message"] for line in mine)
    received = [line for line in log_lines(traced.worker)
                if "received" in line["message"] and job_id in line["message"]]
    assert received and received[0]["logger"].startswith("celery")  # Celery's own lines: the same JSON formatter


def test_a_retried_and_fallen_back_job_stays_in_one_trace_and_nothing_leaks(
        traced: TracedFleet, sim: httpx.Client, fleet: FleetEnv) -> None:
    jobs = run_every_path(traced.client, sim)
    fallback, dead = jobs["retry_then_fallback"], jobs["dead_letter"]
    assert fallback["answered_by"] == "sim-anthropic" and dead["status"] == "dead_lettered"

    def runs_of(job_id: str) -> list[dict]:
        return [s for s in spans(traced.worker) if s["name"] == "fedgate.job"
                and s["attributes"]["fedgate.job_id"] == job_id]

    # attempt 1 and its retry on sim-openai, then the fallback to sim-anthropic: three runs, one trace.
    runs = wait_for(lambda: len(found := runs_of(fallback["id"])) >= 3 and found, 30, what="the fallback's spans")
    assert len({trace_of(s) for s in runs}) == 1
    assert {s["attributes"]["fedgate.partner"] for s in runs} == {"sim-openai", "sim-anthropic"}
    wait_for(lambda: runs_of(dead["id"]), 30, what="the dead letter's spans")

    # Every process's output (logs and spans): the traced API and worker, and the session's simulator and API.
    outputs = [traced.api.output(), traced.worker.output()]
    outputs += [path.read_text(errors="replace") for path in fleet.home.glob("*.log")]
    everything = "\n".join(outputs)
    assert leaks(everything) == []
    assert [key for key in configured_secrets(fleet.home) if key in everything] == []
