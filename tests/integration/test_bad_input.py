"""Bad input gets a 4xx that says what is wrong, and nothing is stored or enqueued."""

from __future__ import annotations

import httpx
import pytest
import redis

from tests.helpers import FleetEnv


def snapshot(client: redis.Redis) -> tuple[int, int, int]:
    jobs = sum(1 for _ in client.scan_iter("fg:job:*"))
    return jobs, client.llen("partner.sim-openai"), client.zcard("fg:delayed")


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"partner": "sim-openai", "prompt": ', 422, "not valid JSON"),
        (b'{"prompt": "no partner"}', 422, "partner"),
        (b'{"partner": "sim-openai"}', 422, "prompt"),
        (b'{"partner": "nobody", "prompt": "hi"}', 404, "unknown partner 'nobody'"),
        (b'{"partner": "sim-openai", "prompt": "' + b"x" * 6000 + b'"}', 413, "limit is 5000"),
        (b'{"partner": "sim-openai", "prompt": "hi", "max_tokens": -3}', 422, "max_tokens"),
        (b'{"partner": "sim-openai", "prompt": "hi", "surprise": 1}', 422, "surprise"),
    ],
)
def test_bad_submission_is_refused_and_nothing_is_enqueued(
    api: httpx.Client, fleet: FleetEnv, redis_server, body: bytes, status: int, says: str
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    before = snapshot(client)
    response = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    assert snapshot(client) == before


def test_wrong_api_key_is_refused(fleet: FleetEnv) -> None:
    response = httpx.post(f"{fleet.env['FEDGATE_API_URL']}/v1/jobs", json={"partner": "sim-openai", "prompt": "x"},
                          headers={"authorization": "Bearer not-a-key"})
    assert response.status_code == 401
    assert "invalid API key" in response.json()["error"]["message"]
