"""Issue 3: PII never reaches a partner that may not see it, nor Redis, logs or Flower; it comes back for the app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from tests.helpers import FleetEnv, Proc, RedisDatabases, finish_job, http_ok, start_fleet, submit_job, wait_for

TEST_CONFIG = Path(__file__).resolve().parents[1] / "fleet_config.yaml"
FLOWER_AUTH = ("operator", "test-flower-password")
PII = {
    "EMAIL_ADDRESS": "leaky.alice@example.org",
    "PHONE_NUMBER": "+1 415-555-2671",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "203.0.113.77",
    "US_SSN": "536-90-4399",
}
PROMPT = (
    f"Customer {PII['EMAIL_ADDRESS']} (phone {PII['PHONE_NUMBER']}) paid with {PII['CREDIT_CARD']} "
    f"from IBAN {PII['IBAN_CODE']}, login from {PII['IP_ADDRESS']}, SSN {PII['US_SSN']}. "
    f"Reply to {PII['EMAIL_ADDRESS']}."
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_databases: RedisDatabases) -> Iterator[FleetEnv]:
    """A simulator and an API of this module's own, on a Redis database of its own: partners fail here and
    sim-openai's breaker opens, which no other module sees; and every key in that database is this module's."""
    own = start_fleet(tmp_path_factory.mktemp("pii-fleet"), redis_databases.url())
    yield own
    own.stop_all()


@pytest.fixture(scope="module")
def fleet_with_flower(fleet: FleetEnv) -> Iterator[tuple[Proc, str]]:
    worker = fleet.start_worker("sim-openai,sim-anthropic")
    flower = fleet.spawn("flower", "flower")
    url = f"http://127.0.0.1:{fleet.env['FEDGATE_FLOWER_PORT']}"
    wait_for(lambda: http_ok(f"{url}/healthcheck"), 60, what="flower")
    # Flower shows a task once the worker's events reach it; wait for its API to answer with basic auth.
    wait_for(lambda: httpx.get(f"{url}/api/workers", auth=FLOWER_AUTH, timeout=5).status_code == 200, 60,
             what="flower api")
    yield worker, url
    flower.stop()
    worker.stop()


def finish(api: httpx.Client, job_id: str) -> dict:
    return finish_job(api, job_id, timeout=90)


def submit(api: httpx.Client, partner: str) -> str:
    return submit_job(api, partner, PROMPT)


def everything_in_redis(client: redis.Redis) -> str:
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == "string":
            parts.append(str(client.get(key)))
        elif kind == "hash":
            parts.append(json.dumps(client.hgetall(key)))
        elif kind == "list":
            parts.append(json.dumps(client.lrange(key, 0, -1)))
        elif kind == "zset":
            parts.append(json.dumps(client.zrange(key, 0, -1)))
        elif kind == "set":
            parts.append(json.dumps(sorted(client.smembers(key))))
        parts.append(key)
    return "\n".join(parts)


def leaks(text: str) -> list[str]:
    found = [name for name, value in PII.items() if value in text]
    # Also catch a card or IBAN written without its separators.
    found += [name for name in ("CREDIT_CARD", "IBAN_CODE") if PII[name].replace(" ", "") in text.replace(" ", "")]
    return sorted(set(found))


def configured_secrets(home: Path) -> list[str]:
    """The partner and tenant API keys of the test config, and the development tenant's key file."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    found = [entry["api_key"] for section in ("partners", "tenants") for entry in config[section].values()
             if entry.get("api_key")]
    return [*found, (home / "dev-api-key").read_text().strip()]


def run_every_path(api: httpx.Client, sim: httpx.Client) -> dict[str, dict]:
    """The seeded prompt through success, retry then fallback, and dead letter. Run it on a fleet of the module's
    own: it leaves the simulator's partners failing and sim-openai's breaker open."""
    jobs: dict[str, dict] = {}
    jobs["success"] = finish(api, submit(api, "sim-openai"))
    sim.put("/_sim/partners/sim-openai", json={"error_rate": 1, "error_status": 503})
    jobs["retry_then_fallback"] = finish(api, submit(api, "sim-openai"))
    sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 1, "error_status": 400})
    jobs["dead_letter"] = finish(api, submit(api, "sim-openai"))
    return jobs


def test_pii_never_leaves_in_clear_on_any_path(api: httpx.Client, sim: httpx.Client, fleet: FleetEnv,
                                               fleet_with_flower: tuple[Proc, str],
                                               fleet_redis: redis.Redis) -> None:
    _, flower_url = fleet_with_flower
    client = fleet_redis
    jobs = run_every_path(api, sim)
    success, fallback, dead = jobs["success"], jobs["retry_then_fallback"], jobs["dead_letter"]
    assert success["status"] == "succeeded" and fallback["status"] == "succeeded"
    assert fallback["answered_by"] == "sim-anthropic"
    assert dead["status"] == "dead_lettered"
    # The app gets its data back: placeholders in the partner's echo are restored.
    assert success["output"] == f"Simulated reply from sim-openai: {PROMPT}"
    assert fallback["output"] == f"Simulated reply from sim-anthropic: {PROMPT}"
    # Audit: types and counts per partner, never values.
    assert success["redaction_audit"]["sim-openai"]["EMAIL_ADDRESS"] == 2
    assert set(success["redaction_audit"]["sim-openai"]) == set(PII)
    assert set(fallback["redaction_audit"]) == {"sim-openai", "sim-anthropic"}

    # What the partners received: placeholders, not values; the repeated email got the same placeholder.
    received = sim.get("/_sim/requests/sim-openai").json()["bodies"] + sim.get(
        "/_sim/requests/sim-anthropic").json()["bodies"]
    assert received
    assert leaks("\n".join(received)) == []
    assert all(body.count("<EMAIL_ADDRESS_1>") == 2 for body in received if "Customer" in body)

    # Nowhere at rest or in transit: every Redis key (queues, unacked, job store, dead letters), logs, Flower.
    assert leaks(everything_in_redis(client)) == []
    logs = "\n".join(path.read_text(errors="replace") for path in fleet.home.glob("*.log"))
    assert leaks(logs) == []
    assert [key for key in configured_secrets(fleet.home) if key in logs] == []
    flower_tasks = wait_for(
        lambda: (text := httpx.get(f"{flower_url}/api/tasks", auth=FLOWER_AUTH, timeout=10).text)
        and dead["id"] in text and text, 30, what="flower to list the jobs' tasks")
    assert "fedgate.run_job" in flower_tasks
    assert leaks(flower_tasks) == []
    assert leaks(json.dumps(api.get(f"/v1/jobs/{dead['id']}").json())) == []  # the dead letter shows no prompt
