"""Bad input gets a 4xx that says what is wrong, and nothing is stored or enqueued."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

import httpx
import pytest
import redis

from gateway_core.fleet import keys
from gateway_core.jobs.store import parse_delayed_member
from tests.helpers import FleetEnv

TENANT = "dev"  # the tenant of the `api` fixture's key (test-key-dev)


@dataclass(frozen=True)
class Traces:
    """Everything a submission would leave behind, as identities: a job created by the requests under test has an
    id never seen before, so it shows up as a new identity whatever other tests left or are doing meanwhile."""

    jobs: frozenset[str]  # ids of every job hash (any tenant: a new one of another tenant is filtered later)
    queued: frozenset[str]  # job ids of the messages on every partner queue (both lanes, any partner)
    delayed: frozenset[str]  # job ids in the delay sets (both lanes), safety nets included
    idempotency: frozenset[str]  # the tenant's idempotency slots

    def known(self) -> frozenset[str]:
        return self.jobs | self.queued | self.delayed


def _queued_job_id(raw: str) -> str:
    """The job id of a Celery message on a partner queue (task id `job_id-attempt`); an unreadable message counts
    by its digest, so it still shows up as new."""
    try:
        task_id = str(json.loads(raw)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return "message:" + hashlib.sha256(raw.encode()).hexdigest()
    return task_id.rpartition("-")[0] or task_id


def traces(client: redis.Redis) -> Traces:
    jobs = frozenset(key.removeprefix(keys.job("")) for key in client.scan_iter(keys.job("*"), count=1000))
    queued = frozenset(
        _queued_job_id(str(raw))
        for queue in client.scan_iter("partner.*", count=1000, _type="list")
        for raw in client.lrange(queue, 0, -1)
    )
    delayed = frozenset(
        parse_delayed_member(str(member))[0]
        for lane in keys.LANES
        for member in client.zrange(keys.delayed(lane), 0, -1)
    )
    idempotency = frozenset(client.scan_iter(keys.idempotency(TENANT, "*"), count=1000))
    return Traces(jobs, queued, delayed, idempotency)


def assert_nothing_new_for_the_tenant(client: redis.Redis, before: Traces) -> None:
    after = traces(client)
    fresh = after.known() - before.known()
    # Jobs that other tenants' work created meanwhile are not ours; a fresh id with no hash (a message or delay
    # entry without its job) or with this tenant's hash is.
    ours = sorted(job_id for job_id in fresh if client.hget(keys.job(job_id), "tenant") in (None, TENANT))
    assert ours == [], f"the refused request left job(s) behind: {ours}"
    assert after.idempotency - before.idempotency == frozenset()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"partner": "sim-openai", "prompt": ', 422, "not valid JSON"),
        (b'{"prompt": "no partner"}', 422, "partner"),
        (b'{"partner": "sim-openai"}', 422, "prompt"),
        (b'{"partner": "nobody", "prompt": "hi"}', 404, "unknown partner 'nobody'"),
        (b'{"partner": "sim-openai", "prompt": "' + b"x" * 6000 + b'"}', 413, "limit is 5000"),
        (b'{"partner": "sim-openai", "prompt": "hi", "max_tokens": -3}', 422, "max_tokens"),
        (b'{"partner": "sim-openai", "prompt": "hi", "surprise": 1}', 400, "surprise"),  # not honoured: 400
    ],
)
@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotency-key"])
def test_bad_submission_is_refused_and_nothing_is_enqueued(
    api: httpx.Client, fleet_redis: redis.Redis, body: bytes, status: int, says: str, idempotent: bool
) -> None:
    before = traces(fleet_redis)
    headers = {"content-type": "application/json"}
    if idempotent:  # a refused request must not keep its Idempotency-Key slot either
        headers["idempotency-key"] = f"bad-input-{uuid.uuid4()}"
    response = api.post("/v1/jobs", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    assert_nothing_new_for_the_tenant(fleet_redis, before)


def test_wrong_api_key_is_refused(fleet: FleetEnv) -> None:
    response = httpx.post(f"{fleet.env['FEDGATE_API_URL']}/v1/jobs", json={"partner": "sim-openai", "prompt": "x"},
                          headers={"authorization": "Bearer not-a-key"})
    assert response.status_code == 401
    assert "invalid API key" in response.json()["error"]["message"]
