"""The OpenAI Batch API shape (/v1/files, /v1/batches) driven by the official openai SDK against the fleet."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.helpers import FleetEnv, Proc, wait_for


@pytest.fixture(scope="module")
def worker(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker("sim-openai,sim-anthropic")
    yield proc
    proc.stop()


@pytest.fixture()
def sdk(fleet: FleetEnv) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-dev", max_retries=0)


@pytest.fixture()
def store(fleet: FleetEnv) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(fleet.env["FEDGATE_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


def request_line(custom_id: str, model: str, prompt: str, **body: Any) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": model, "messages": [{"role": "user", "content": prompt}], **body}})


def upload(sdk: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return sdk.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id


def wait_status(sdk: openai.OpenAI, batch_id: str, *statuses: str, timeout: float = 60) -> Any:
    return wait_for(lambda: (b := sdk.batches.retrieve(batch_id)).status in statuses and b, timeout, 0.2,
                    what=f"batch {batch_id} to be {' or '.join(statuses)}")


def jsonl(sdk: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in sdk.files.content(file_id).text.splitlines() if x.strip()]


def job_count(store: redis.Redis) -> int:
    return sum(1 for key in store.scan_iter("fg:job:*", count=1000) if ":" not in key[len("fg:job:"):])


def test_a_batch_runs_to_completion(sdk: openai.OpenAI, worker: Proc) -> None:
    lines = [request_line(f"req-{i}", "sim-openai" if i % 2 else "fast-model", f"prompt {i}", max_tokens=20)
             for i in range(20)]
    file_id = upload(sdk, [*lines, request_line("unknown", "no-such-model", "x")])
    file = sdk.files.retrieve(file_id)
    assert file.object == "file" and file.purpose == "batch" and file.bytes > 0
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
                               metadata={"run": "nightly"})
    assert batch.object == "batch" and batch.status in ("validating", "in_progress")
    assert batch.metadata == {"run": "nightly"}
    done = wait_status(sdk, batch.id, "completed", "failed")
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (21, 20, 1)
    assert done.completed_at and done.output_file_id and done.error_file_id

    output = jsonl(sdk, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(20))
    for entry in output:
        i = int(entry["custom_id"].split("-")[1])
        assert entry["id"].startswith("batch_req_") and entry["error"] is None
        assert entry["response"]["status_code"] == 200
        body = entry["response"]["body"]
        assert body["object"] == "chat.completion"
        partner = "sim-openai" if i % 2 else "sim-anthropic"
        assert body["choices"][0]["message"]["content"] == f"Simulated reply from {partner}: prompt {i}"
        assert body["model"] == ("sim-openai" if i % 2 else "fast-model")
        assert body["usage"]["total_tokens"] > 0
    errors = jsonl(sdk, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["unknown"]
    assert errors[0]["error"]["code"] == "model_not_found"
    assert errors[0]["response"]["status_code"] == 404


@pytest.mark.parametrize(
    ("bad_line", "code"),
    [('{"custom_id": "broken", "method": "POST", ', "invalid_json"),
     (request_line("req-0", "sim-openai", "again"), "duplicate_custom_id")],
)
def test_a_bad_line_fails_the_batch_and_nothing_runs(
    sdk: openai.OpenAI, store: redis.Redis, bad_line: str, code: str
) -> None:
    lines = [request_line(f"req-{i}", "sim-openai", f"p{i}") for i in range(3)]
    file_id = upload(sdk, [*lines[:2], bad_line, lines[2]])
    jobs_before = job_count(store)
    batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data
    error = batch.errors.data[0]
    assert (error.line, error.code) == (3, code)
    assert "line 3" in (error.message or "")
    assert sdk.batches.retrieve(batch.id).status == "failed"
    assert store.llen(f"fg:batch:{batch.id}:jobs") == 0
    assert job_count(store) == jobs_before


def test_bad_uploads_are_refused(sdk: openai.OpenAI, fleet: FleetEnv) -> None:
    with pytest.raises(openai.BadRequestError, match="purpose"):
        sdk.files.create(file=("in.jsonl", io.BytesIO(b"{}\n")), purpose="assistants")
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(input_file_id="file-doesnotexist", endpoint="/v1/chat/completions",
                           completion_window="24h")
    file_id = upload(sdk, [request_line("a", "sim-openai", "hi")])
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        sdk.batches.create(input_file_id=file_id, endpoint="/v1/completions", completion_window="24h")
    other = openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-other", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")


def test_cancel_a_batch_while_its_jobs_are_held(
    sdk: openai.OpenAI, sim: httpx.Client, worker: Proc, fleet: FleetEnv
) -> None:
    sim.put("/_sim/partners/sim-openai", json={"latency_ms": 3000})
    try:
        file_id = upload(sdk, [request_line(f"slow-{i}", "sim-openai", f"p{i}") for i in range(5)])
        batch = sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.status == "in_progress"
        other = openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-other",
                              max_retries=0)
        with pytest.raises(openai.NotFoundError):
            other.batches.cancel(batch.id)
        cancelling = sdk.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        assert cancelling.cancelling_at
        done = wait_status(sdk, batch.id, "cancelled", "completed")
        assert done.status == "cancelled" and done.cancelled_at
        assert done.request_counts is not None and done.request_counts.completed == 0
        assert done.request_counts.failed == 5 and done.error_file_id and done.output_file_id is None
        assert {e["error"]["code"] for e in jsonl(sdk, done.error_file_id)} == {"batch_cancelled"}
        with pytest.raises(openai.ConflictError):
            sdk.batches.cancel(batch.id)
    finally:
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})


def test_batches_are_listed_with_cursor_paging(sdk: openai.OpenAI, fleet: FleetEnv) -> None:
    file_id = upload(sdk, [request_line("a", "sim-openai", "hi"), request_line("a", "sim-openai", "dup")])
    created = [sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                  completion_window="24h").id for _ in range(3)]
    page = sdk.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert [b.id for b in page.data] == created[::-1][:2]  # newest first
    following = sdk.batches.list(limit=2, after=page.data[-1].id)
    assert following.data[0].id == created[0]
    every = [b.id for b in sdk.batches.list(limit=2)]  # the SDK follows `after` while has_more
    assert every[:3] == created[::-1] and len(every) == len(set(every))
    other = openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-other", max_retries=0)
    assert not set(created) & {b.id for b in other.batches.list()}
