"""Batch jobs run in a lower-priority lane per partner: interactive jobs are served first."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import redis

from gateway_core.fleet import keys
from tests.helpers import FleetEnv, wait_for

PARTNER = "sim-anthropic-forgetful"  # no module-wide worker consumes it, so each test decides who does
BATCH_LINES = 12
INTERACTIVE_JOBS = 4


@pytest.fixture()
def store(fleet: FleetEnv) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(fleet.env["FEDGATE_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


def create_batch(fleet: FleetEnv) -> str:
    sdk = openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-dev", max_retries=0)
    lines = [json.dumps({"custom_id": f"lane-{n}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": PARTNER, "messages": [{"role": "user", "content": f"batch {n}"}]}})
             for n in range(BATCH_LINES)]
    file_id = sdk.files.create(file=("in.jsonl", io.BytesIO(("\n".join(lines) + "\n").encode())), purpose="batch").id
    return sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id


def batch_job_ids(store: redis.Redis, batch_id: str) -> list[str]:
    return store.lrange(f"fg:batch:{batch_id}:jobs", 0, -1)


def started_at(store: redis.Redis, job_ids: list[str]) -> list[float]:
    return [float(store.hget(keys.job(j), "started_at") or "inf") for j in job_ids]


def finished(store: redis.Redis, job_ids: list[str]) -> bool:
    return all(store.hget(keys.job(j), "status") == "succeeded" for j in job_ids)


def test_interactive_jobs_go_first_and_an_interactive_only_worker_leaves_the_batch_lane_alone(
    fleet: FleetEnv, api: httpx.Client, store: redis.Redis
) -> None:
    batch_id = create_batch(fleet)
    batch_jobs = batch_job_ids(store, batch_id)
    assert len(batch_jobs) == BATCH_LINES
    assert {store.hget(keys.job(j), "lane") for j in batch_jobs} == {keys.BATCH}

    interactive_only = fleet.start_worker(PARTNER, concurrency=1, lanes="interactive")
    try:
        interactive = [api.post("/v1/jobs", json={"partner": PARTNER, "prompt": f"now {n}"}).json()["id"]
                       for n in range(INTERACTIVE_JOBS)]
        wait_for(lambda: finished(store, interactive), 60, what="interactive jobs on the interactive-only worker")
        # it neither ran nor moved the batch: the jobs still wait in the batch lane's delay queue
        assert all(store.hget(keys.job(j), "status") == "queued" for j in batch_jobs)
        assert store.llen(keys.partner_queue(PARTNER, keys.BATCH)) == 0
        assert store.zcard(keys.delayed(keys.BATCH)) >= BATCH_LINES
    finally:
        interactive_only.stop()

    # Interactive jobs submitted AFTER the batch are still taken first by a worker reading both lanes. A long-poll
    # on a batch job (batch completions have their own channel, which the API follows only while someone waits)
    # returns when that job finishes.
    later = [api.post("/v1/jobs", json={"partner": PARTNER, "prompt": f"later {n}"}).json()["id"]
             for n in range(INTERACTIVE_JOBS)]
    with ThreadPoolExecutor(1) as pool:
        long_poll = pool.submit(api.get, f"/v1/jobs/{batch_jobs[0]}", params={"wait": 60})
        both = fleet.start_worker(PARTNER, concurrency=1, lanes="interactive,batch")
        try:
            wait_for(lambda: finished(store, later + batch_jobs), 90, what="both lanes to drain")
            polled = long_poll.result(timeout=30)
        finally:
            both.stop()
    assert polled.status_code == 200 and polled.json()["status"] == "succeeded", polled.text
    assert max(started_at(store, later)) < min(started_at(store, batch_jobs))
    assert store.llen(keys.partner_queue(PARTNER, keys.BATCH)) == 0


def test_a_worker_refuses_an_unknown_lane(fleet: FleetEnv) -> None:
    proc = fleet.spawn("worker-bad-lane", "worker", "--partners", PARTNER, "--lanes", "express")
    assert proc.process.wait(timeout=60) == 2
    assert "--lanes: express is not a lane; use interactive, batch or both" in proc.output()
