"""Nobody let in, nothing unbounded: the key is checked before a body is read, bodies are limited before they are
parsed (413 in OpenAI's error shape), uploads are counted as they stream against the file limit and the tenant's
quota, inputs have stated limits, and /metrics answers only its bearer token, with one Redis read per period.

Requests that must be answered before their body is sent go over a raw socket: the test sends the headers (and part
of the body at most) and waits for the answer. An API that read the body first would wait for the rest and never
answer, so the read times out."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import FleetEnv, RedisDatabases
from tests.integration.own_api import KEY, OwnApi, own_api

ANSWER_WITHIN_S = 10
FILE_LIMIT = 64 * 1024
TENANT_FILES = 4
TENANT_BYTES = 150 * 1024
METRICS_TOKEN = "metrics-" + os.urandom(12).hex()
OTHER = "test-key-other"  # the `other` tenant's key (tests/fleet_config.yaml)


@pytest.fixture(scope="module")
def small(fleet: FleetEnv, redis_databases: RedisDatabases, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[OwnApi]:
    """An API with small upload limits and quotas, a metrics token and a long metrics cache."""
    with own_api(fleet, tmp_path_factory.mktemp("limits-home"), redis_databases.url(),
                 FEDGATE_MAX_BATCH_FILE_BYTES=str(FILE_LIMIT), FEDGATE_MAX_FILES_PER_TENANT=str(TENANT_FILES),
                 FEDGATE_MAX_FILE_BYTES_PER_TENANT=str(TENANT_BYTES), FEDGATE_METRICS_TOKEN=METRICS_TOKEN,
                 FEDGATE_METRICS_CACHE_S="60") as api:
        yield api


def raw_exchange(url: str, head: str, body: bytes = b"") -> tuple[int, dict[str, str], dict]:
    """Send `head` (request line and headers) and `body`, then read the answer without sending anything more."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN_S) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within {ANSWER_WITHIN_S}s: the API waited for the body") from None
            if not chunk:
                break
            received += chunk
    head_bytes, _, payload = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(payload[: int(headers["content-length"])])


def _length(received: bytes) -> int:
    head = received.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 0


def assert_openai_error(body: dict, code: str) -> str:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


# --- the key before the body, the limit before parsing -------------------------------------------------------


def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read(fleet: FleetEnv) -> None:
    url = fleet.env["FEDGATE_API_URL"]
    for auth in ("", "Authorization: Bearer not-a-key\n"):
        status, headers, body = raw_exchange(
            url, f"POST /v1/jobs HTTP/1.1\nHost: api\nContent-Type: application/json\n{auth}"
                 "Content-Length: 5000000\n")  # 5 MB announced, none of it sent
        assert status == 401
        assert headers["www-authenticate"] == "Bearer"
        assert "API key" in assert_openai_error(body, "invalid_api_key" if auth else "missing_api_key")


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(fleet: FleetEnv) -> None:
    status, _, body = raw_exchange(
        fleet.env["FEDGATE_API_URL"],
        f"POST /v1/jobs HTTP/1.1\nHost: api\nAuthorization: Bearer {KEY}\nContent-Type: application/json\n"
        "Content-Length: 5000000\n")
    assert status == 413
    message = assert_openai_error(body, "request_too_large")
    # 5000 prompt characters (the session's FEDGATE_MAX_PROMPT_CHARS): 8 bytes each plus 1 MiB
    assert "5000000 bytes" in message and f"at most {8 * 5000 + 1024 * 1024} bytes" in message


def test_a_chunked_body_is_cut_at_the_limit_without_reading_the_rest(fleet: FleetEnv) -> None:
    limit = 8 * 5000 + 1024 * 1024
    chunk = b"x" * (256 * 1024)
    sent = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // len(chunk) + 1))
    # No terminating chunk: the rest of the body never comes, so only a cut answers.
    status, _, body = raw_exchange(
        fleet.env["FEDGATE_API_URL"],
        f"POST /v1/chat/completions HTTP/1.1\nHost: api\nAuthorization: Bearer {KEY}\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n", sent)
    assert status == 413
    assert f"at most {limit} bytes" in assert_openai_error(body, "request_too_large")


def test_a_body_within_the_limit_reaches_the_route(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", content=json.dumps({"partner": "sim-openai", "prompt": "x" * 6000}),
                        headers={"content-type": "application/json"})
    assert response.status_code == 413  # the prompt limit (5000 characters), not the body limit
    assert_openai_error(response.json(), "prompt_too_large")


# --- input quotas with clear 4xx ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "says"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16 items"),
        ({"metadata": {"k" * 65: "v"}}, "metadata", "at most 64 characters"),
        ({"metadata": {"note": "v" * 513}}, "metadata.note", "at most 512 characters"),
        ({"prompt": None, "messages": [{"role": "user", "content": "hi"}] * 1001}, "messages", "at most 1000 items"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "body", "exactly one of 'prompt'"),
        ({"max_tokens": "5"}, "max_tokens", "not '5'"),
    ],
)
def test_job_inputs_over_their_limits_are_refused_naming_the_field(
    api: httpx.Client, extra: dict, param: str, says: str
) -> None:
    response = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "hi", **extra})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"].startswith(param) and says in error["message"], error


def test_chat_completions_refuse_fields_they_do_not_honour(api: httpx.Client) -> None:
    # OpenAI answers an invalid body with 400; a field we do not honour is a 400 that names it.
    response = api.post("/v1/chat/completions", json={
        "model": "sim-openai", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"50256": -100}})
    assert response.status_code == 400
    assert "logit_bias" in assert_openai_error(response.json(), "unsupported_field")
    many = api.post("/v1/chat/completions", json={
        "model": "sim-openai", "messages": [{"role": "user", "content": "hi"}] * 1001})
    assert many.status_code == 400 and many.json()["error"]["param"] == "messages"


def multipart(content: bytes, purpose: str = "batch") -> tuple[bytes, str]:
    boundary = "fedgate-test-" + os.urandom(6).hex()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(api: OwnApi, content: bytes, key: str = KEY) -> httpx.Response:
    body, content_type = multipart(content)
    with api.client(key) as client:
        return client.post("/v1/files", content=body, headers={"content-type": content_type})


def test_an_upload_over_the_file_limit_is_cut_while_it_streams(small: OwnApi) -> None:
    body, content_type = multipart(b"x" * (3 * FILE_LIMIT))
    chunked = b"%x\r\n%s\r\n" % (len(body), body)  # one chunk, and the body never ends: only a cut answers
    status, _, answer = raw_exchange(
        small.url, f"POST /v1/files HTTP/1.1\nHost: api\nAuthorization: Bearer {KEY}\n"
                   f"Content-Type: {content_type}\nTransfer-Encoding: chunked\n", chunked)
    assert status == 413
    assert f"{FILE_LIMIT} bytes" in assert_openai_error(answer, "file_too_large")
    with small.client() as client:
        assert client.get("/v1/files/nothing").status_code == 404  # the API goes on serving


def test_uploads_count_against_the_tenants_quota_until_deleted(small: OwnApi) -> None:
    """As the `other` tenant (tests/fleet_config.yaml): the quota this test fills is not the one the module's other
    uploads (the dev tenant's) count against."""
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    kept = []
    for _ in range(TENANT_FILES):
        response = upload(small, line, OTHER)
        assert response.status_code == 200, response.text
        kept.append(response.json()["id"])
    refused = upload(small, line, OTHER)
    assert refused.status_code == 403
    message = assert_openai_error(refused.json(), "file_quota_exceeded")
    assert f"keeps {TENANT_FILES} uploaded files" in message and "DELETE /v1/files/" in message

    with small.client(OTHER) as client:
        deleted = client.delete(f"/v1/files/{kept.pop()}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert client.get(f"/v1/files/{deleted.json()['id']}").status_code == 404
    again = upload(small, line, OTHER)  # the deleted file's place is free again
    assert again.status_code == 200
    kept.append(again.json()["id"])

    with small.client(OTHER) as client:  # now the bytes: 2 x 63 KiB fit in 150 KiB, a third does not
        for file_id in kept:
            assert client.delete(f"/v1/files/{file_id}").status_code == 200
    near_limit = b"y" * (FILE_LIMIT - 1024)
    assert upload(small, near_limit, OTHER).status_code == 200
    assert upload(small, near_limit, OTHER).status_code == 200
    third = upload(small, near_limit, OTHER)
    assert third.status_code == 403
    message = assert_openai_error(third.json(), "file_quota_exceeded")
    assert f"keeps {2 * len(near_limit)} bytes of uploaded files" in message


# --- /metrics --------------------------------------------------------------------------------------------------


def test_metrics_answer_only_the_bearer_token(small: OwnApi) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {KEY}"}):
        refused = httpx.get(f"{small.url}/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401
        assert "metrics token" in assert_openai_error(refused.json(), "invalid_metrics_token")
        assert "fedgate_tenant_spend_usd" not in refused.text
    scraped = httpx.get(f"{small.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert scraped.status_code == 200 and "fedgate_fleet_state_up 1.0" in scraped.text


def test_scrapes_share_one_redis_read_per_period(small: OwnApi) -> None:
    def reads() -> float:
        text = httpx.get(f"{small.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"},
                         timeout=10).text
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        return samples["fedgate_metrics_fleet_reads_total"]

    first = reads()
    assert [reads() for _ in range(20)] == [first] * 20  # FEDGATE_METRICS_CACHE_S=60: no new read


def test_the_default_metrics_token_is_a_private_file_in_the_home(fleet: FleetEnv) -> None:
    path = Path(fleet.env["FEDGATE_HOME"]) / "metrics-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    url = fleet.env["FEDGATE_API_URL"] + "/metrics"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=10).status_code == 200
