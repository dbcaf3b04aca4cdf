"""Issue 6 (webhooks): a job with a webhook_url is delivered, signed, to the tenant's endpoint; SSRF is refused.

Partner workers do not deliver webhooks: a webhook worker (`fedgate webhook-worker`) does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks import Webhook

from tests.helpers import FleetEnv, Proc, wait_for
from tests.integration.test_webhook_delivery import start_receiver


@pytest.fixture(scope="module")
def webhook_worker(fleet: FleetEnv) -> Iterator[Proc]:
    """A webhook worker on the shared fleet's database (a deadline below the fleet's 10 s visibility timeout)."""
    own = FleetEnv(fleet.home, {**fleet.env, "FEDGATE_WEBHOOK_TIMEOUT_S": "4"})
    proc = own.spawn("webhook-worker", "webhook-worker", "--concurrency", "20")
    try:
        wait_for(lambda: "ready." in proc.output() or proc.process.poll() is not None, 60, what="webhook worker ready")
        assert proc.process.poll() is None, proc.output()[-3000:]
        yield proc
    finally:
        proc.stop()


def test_a_finished_job_is_posted_signed_to_its_webhook(
    api: httpx.Client, fleet: FleetEnv, worker: Proc, webhook_worker: Proc
) -> None:
    receiver, server = start_receiver()
    try:
        prompt = "Refund order 77 for mia@example.com"
        job_id = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": prompt,
                                            "webhook_url": receiver.url("/hooks/fedgate")}).json()["id"]
        (delivery,) = wait_for(lambda: receiver.seen("/hooks/fedgate"), 60, what="the webhook")
    finally:
        server.shutdown()
    secret = (fleet.home / "dev-webhook-secret").read_text().strip()
    Webhook(secret).verify(delivery.body, {k.lower(): v for k, v in delivery.headers.items()})
    event = json.loads(delivery.body)
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job_id
    assert event["data"]["output"] == f"Simulated reply from sim-openai: {prompt}"  # restored for the tenant
    assert "messages" not in event["data"] and "prompt" not in event["data"]



def test_a_cancelled_job_is_posted_once_to_its_webhook(
    api: httpx.Client, sim: httpx.Client, fleet: FleetEnv, worker: Proc, webhook_worker: Proc
) -> None:
    receiver, server = start_receiver()
    assert sim.put("/_sim/partners/sim-openai", json={"latency_ms": 3000}).status_code == 200
    try:
        job_id = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "slow one",
                                            "webhook_url": receiver.url("/hooks/cancelled")}).json()["id"]
        assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"  # again: no second webhook
        (delivery,) = wait_for(lambda: receiver.seen("/hooks/cancelled"), 60, what="the cancelled webhook")
    finally:
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})
        server.shutdown()
    event = json.loads(delivery.body)
    assert (event["type"], event["data"]["id"], event["data"]["status"]) == ("job.cancelled", job_id, "cancelled")
    assert len(receiver.seen("/hooks/cancelled")) == 1

@pytest.mark.parametrize("url", ["http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data", "ftp://x/y"])
def test_private_and_non_http_destinations_are_refused_at_submit(api: httpx.Client, url: str) -> None:
    response = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "x", "webhook_url": url})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("webhook_url: ")
