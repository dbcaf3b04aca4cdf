"""Webhook signing (checked with the reference `standardwebhooks` library), SSRF refusals, retry decisions and the
event body. One delivery attempt at a time against a real redis-server: tests/integration/test_webhooks.py."""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceVerificationError

from gateway_core import webhooks as wh
from gateway_core.jobs.models import JobStatus, JobView, Usage
from gateway_core.webhooks import (
    WebhookDestinationRefused,
    WebhookDestinationUnresolved,
    WebhookEvent,
    WebhookVerificationError,
    check_destination,
    delivery,
    delivery_decision,
    new_secret,
    sign,
    verify,
)

BODY = b'{"type":"job.succeeded","data":{"id":"job_1","output":"caf\xc3\xa9"}}'


def headers_for(secrets: list[str], body: bytes = BODY, msg_id: str = "msg_abc", ts: int | None = None) -> dict:
    timestamp = int(time.time()) if ts is None else ts
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, msg_id, timestamp, body)}


# --- secrets and signatures ----------------------------------------------------------------------------------


def test_new_secret_is_whsec_with_24_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert new_secret() != secret


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = new_secret()
    headers = headers_for([secret])
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    verify(secret, headers, BODY)


def test_signature_matches_reference_library_byte_for_byte() -> None:
    secret, ts = new_secret(), int(time.time())
    reference = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, tz=UTC), BODY.decode())
    assert sign([secret], "msg_1", ts, BODY) == reference


def test_rotation_sends_both_signatures_and_each_secret_alone_verifies() -> None:
    new, old, stranger = new_secret(), new_secret(), new_secret()
    headers = headers_for([new, old])
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert signatures[0] == sign([new], "msg_abc", int(headers["webhook-timestamp"]), BODY)  # newest first
    for secret in (new, old):
        Webhook(secret).verify(BODY, headers)
        verify(secret, headers, BODY)
    with pytest.raises(ReferenceVerificationError):
        Webhook(stranger).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError, match="no webhook signature matches"):
        verify(stranger, headers, BODY)


def test_tampered_body_fails() -> None:
    secret = new_secret()
    headers = headers_for([secret])
    tampered = BODY.replace(b"job_1", b"job_2")
    with pytest.raises(ReferenceVerificationError):
        Webhook(secret).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError, match="body was changed"):
        verify(secret, headers, tampered)


def test_tampered_id_or_timestamp_fails() -> None:
    secret = new_secret()
    headers = headers_for([secret])
    for name, value in (("webhook-id", "msg_other"), ("webhook-timestamp", str(int(headers["webhook-timestamp"]) + 1))):
        with pytest.raises(WebhookVerificationError):
            verify(secret, {**headers, name: value}, BODY)


def test_verify_refuses_stale_or_future_timestamps_and_missing_headers() -> None:
    secret = new_secret()
    old = headers_for([secret], ts=int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(secret, old, BODY)
    verify(secret, old, BODY, tolerance_s=900)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(secret, headers_for([secret], ts=int(time.time()) + 600), BODY)
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify(secret, {"webhook-id": "m", "webhook-timestamp": "1"}, BODY)
    upper = {k.upper(): v for k, v in headers_for([secret]).items()}
    verify(secret, upper, BODY.decode())


def test_sign_refuses_no_secret_or_a_malformed_one() -> None:
    with pytest.raises(wh.WebhookSecretError, match="no webhook secret"):
        sign([], "msg_1", 1, BODY)
    with pytest.raises(wh.WebhookSecretError, match="base64"):
        sign(["whsec_not base64!"], "msg_1", 1, BODY)
    with pytest.raises(ValueError, match="message id"):
        sign([new_secret()], "msg.1", 1, BODY)


def test_tenant_secrets_reads_list_then_file_relative_to_home(tmp_path: Path) -> None:
    file_secret = wh.load_or_create_secret(tmp_path / "dev-webhook-secret")
    assert file_secret.startswith("whsec_")
    assert wh.load_or_create_secret(tmp_path / "dev-webhook-secret") == file_secret  # created once
    assert (tmp_path / "dev-webhook-secret").stat().st_mode & 0o077 == 0

    class Tenant:
        webhook_secrets = ["whsec_bmV3"]
        webhook_secret_file = "dev-webhook-secret"

    assert wh.tenant_secrets(Tenant(), tmp_path) == ["whsec_bmV3", file_secret]
    assert wh.tenant_secrets(object(), tmp_path) == []
    assert wh.tenant_secrets(None) == []


# --- SSRF ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.10/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://100.100.100.200/hook",  # carrier-grade NAT space (a cloud metadata address)
        "http://localhost:8080/hook",
    ],
)
def test_private_destinations_are_refused(url: str) -> None:
    with pytest.raises(WebhookDestinationRefused, match="SSRF"):
        check_destination(url, [])


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://1.1.1.1/", "example.com/x"])
def test_non_http_schemes_are_refused(url: str) -> None:
    with pytest.raises(WebhookDestinationRefused, match="http:// or https://"):
        check_destination(url, [])


def test_allow_list_admits_cidrs_and_host_names() -> None:
    check_destination("http://127.0.0.1:8080/hook", ["127.0.0.0/8"])
    check_destination("http://[::1]:8080/hook", ["::1/128"])
    check_destination("http://10.1.2.3/hook", ["10.1.2.3"])
    check_destination("http://localhost:8080/hook", ["localhost"])
    check_destination("http://localhost:8080/hook", ["127.0.0.0/8", "::1/128"])
    with pytest.raises(WebhookDestinationRefused):
        check_destination("http://10.1.2.4/hook", ["10.1.2.3", "127.0.0.0/8"])
    with pytest.raises(WebhookDestinationRefused):
        check_destination("http://[::1]/hook", ["127.0.0.0/8"])  # IPv4 ranges do not cover IPv6 loopback


def test_public_addresses_are_allowed() -> None:
    check_destination("https://93.184.215.14/hook", [])
    check_destination("http://[2606:4700:4700::1111]:8443/hook", [])
    assert wh.resolve_destination("https://1.1.1.1/x") == ["1.1.1.1"]


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, port, 0, 0) if ":" in a else (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_host_names_are_judged_by_every_address_they_resolve_to(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {
        "hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
        "rebind.example.com": ["93.184.215.14", "169.254.169.254"],
        "v6-local.example.com": ["fe80::1%eth0"],
    })
    assert wh.resolve_destination("https://hooks.example.com/x") == [
        "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    with pytest.raises(WebhookDestinationRefused, match=r"resolves to 169\.254\.169\.254"):
        check_destination("https://rebind.example.com/x", [])
    with pytest.raises(WebhookDestinationRefused, match="link-local"):
        check_destination("https://v6-local.example.com/x", [])
    check_destination("https://v6-local.example.com/x", ["fe80::/10"])
    with pytest.raises(WebhookDestinationUnresolved, match="does not resolve"):
        check_destination("https://nowhere.example.com/x", [])


def test_pinned_request_keeps_host_and_tls_name() -> None:
    url, headers, extensions = delivery._pinned("https://user:pw@hooks.example.com:8443/a?b=1#frag", "2606:4700::1")
    assert url == "https://user:pw@[2606:4700::1]:8443/a?b=1"
    assert headers == {"host": "hooks.example.com:8443", "connection": "close"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
    url, headers, extensions = delivery._pinned("http://hooks.example.com/a", "93.184.215.14")
    assert (url, extensions) == ("http://93.184.215.14/a", {})
    assert headers == {"host": "hooks.example.com", "connection": "close"}


# --- retry decisions -----------------------------------------------------------------------------------------

BASE, CAP = 1.0, 60.0


@pytest.mark.parametrize(
    ("status", "retry_after", "attempt", "expected"),
    [
        (200, None, 1, "done"),
        (204, None, 3, "done"),
        (299, None, 8, "done"),
        (410, None, 1, "give_up"),
        (410, "5", 1, "give_up"),
        (429, "1", 1, "retry"),
        (502, None, 1, "retry"),
        (504, None, 2, "retry"),
        (500, None, 1, "retry"),
        (503, None, 4, "retry"),
        (None, None, 1, "retry"),  # timeout / connection error
        (404, None, 1, "retry"),
        (400, None, 1, "retry"),
        (301, None, 1, "retry"),  # redirects are not followed
        (502, None, 5, "give_up"),  # attempts exhausted
        (429, "1", 5, "give_up"),
        (None, None, 5, "give_up"),
    ],
)
def test_delivery_decision_table(status: int | None, retry_after: str | None, attempt: int, expected: str) -> None:
    decision, delay = delivery_decision(status, retry_after, attempt, 5, BASE, CAP)
    assert decision == expected
    if expected != "retry":
        assert delay == 0
    else:
        assert 0 <= delay <= max(min(CAP, BASE * 2 ** (attempt - 1)), float(retry_after or 0))


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        delays = [delivery_decision(502, None, attempt, 50, BASE, 8.0, rng)[1] for _ in range(300)]
        ceiling = min(8.0, BASE * 2 ** (attempt - 1))
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # spread over the whole range


def test_retry_after_is_honoured_in_seconds_and_as_an_http_date() -> None:
    for _ in range(50):
        assert delivery_decision(429, "3", 1, 5, 0.1, 1.0)[1] >= 3
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= delivery_decision(503, future, 1, 5, 0.1, 1.0)[1] <= 31
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert delivery_decision(503, past, 1, 5, 0.1, 1.0)[1] <= 1.0
    assert delivery_decision(429, "soon", 1, 5, 0.1, 1.0)[1] <= 1.0  # unreadable: plain backoff
    assert delivery_decision(429, "999999", 1, 5, 0.1, 1.0)[1] == wh.RETRY_AFTER_CEILING_S


# --- the event body ------------------------------------------------------------------------------------------


def job_view(status: JobStatus = JobStatus.SUCCEEDED) -> JobView:
    return JobView(id="job_1", status=status, partner="sim-openai", answered_by="sim-openai", attempts=1,
                   output="the answer", usage=Usage(prompt_tokens=3, completion_tokens=2), created_at=1.0,
                   metadata={"order": "42"})


def test_event_for_a_job_carries_the_output_never_the_prompt() -> None:
    event = WebhookEvent.for_job(job_view())
    body = json.loads(event.body())
    assert body["type"] == "job.succeeded"
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert body["data"]["output"] == "the answer" and body["data"]["id"] == "job_1"
    leaky = WebhookEvent(type="job.cancelled", data={"id": "job_2", "prompt": "secret", "messages": [{"content": "x"}]})
    assert "prompt" not in leaky.data and "messages" not in leaky.data and b"secret" not in leaky.body()
    assert WebhookEvent.for_job(job_view(JobStatus.DEAD_LETTERED)).type == "job.dead_lettered"
    with pytest.raises(ValueError, match="finished jobs only"):
        WebhookEvent.for_job(job_view(JobStatus.RUNNING))
    with pytest.raises(ValueError):
        WebhookEvent(type="job.started", data={})  # type: ignore[arg-type]
