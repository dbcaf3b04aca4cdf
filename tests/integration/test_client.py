"""The Python client: submit, wait, iterate results, cancel, errors, webhook verification."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gateway_core.client import FedgateClient, FedgateClientError
from gateway_core.webhooks import WebhookEvent, new_secret, signed_headers
from tests.helpers import FleetEnv, Proc


@pytest.fixture()
def client(fleet: FleetEnv) -> Iterator[FedgateClient]:
    with FedgateClient(fleet.env["FEDGATE_API_URL"], "test-key-dev") as fg:
        yield fg


def test_submit_wait_and_results(client: FedgateClient, worker: Proc) -> None:
    job = client.wait(client.submit("sim-anthropic", "one"))
    assert job.status.value == "succeeded" and job.output == "Simulated reply from sim-anthropic: one"
    ids = [client.submit("sim-openai", f"many {i}") for i in range(5)]
    finished = list(client.results(ids, timeout_s=60))
    assert sorted(j.id for j in finished) == sorted(ids)
    assert {j.status.value for j in finished} == {"succeeded"}


def test_errors_are_raised_with_the_api_message(client: FedgateClient) -> None:
    with pytest.raises(FedgateClientError, match="unknown partner 'nobody'") as caught:
        client.submit("nobody", "x")
    assert caught.value.status_code == 404


def test_webhook_verification(client: FedgateClient) -> None:
    secret = new_secret()
    event = WebhookEvent(type="job.succeeded", data={"id": "job_x"})
    body = event.body()
    headers = signed_headers([secret], "msg_1", int(time.time()), body)
    assert client.verify_webhook(secret, headers, body).data["id"] == "job_x"
    with pytest.raises(Exception, match="signature"):
        client.verify_webhook(secret, headers, body + b" ")
