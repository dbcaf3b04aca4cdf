"""The request guard (gateway_api/limits.py) in-process on a stand-in ASGI app, the /metrics token's sources, the
deploy files that hand Prometheus the token, and the published schema's limits."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
import yaml
from starlette.types import Message, Receive, Scope, Send

from gateway_api.limits import MULTIPART_SLACK, RequestGuard
from gateway_api.metrics_routes import metrics_token
from gateway_core.errors import ConfigError
from gateway_core.jobs.chat_request import ChatCompletionRequest
from gateway_core.jobs.models import JobSubmission
from gateway_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class Route:
    """A stand-in for the app behind the guard: reads the whole body (as FastAPI does), then answers 200; a failed
    read is answered 400, as FastAPI answers a body it could not parse."""

    def __init__(self) -> None:
        self.reads = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while True:
                message = await receive()
                self.reads += 1
                if not message.get("more_body"):
                    break
            status = 200
        except Exception:
            status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(guard: RequestGuard, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, dict, int]:
    """(status, JSON body or {}, chunks the client handed over) for one request through the guard."""
    scope: Scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    handed = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal handed
        handed += 1
        return {"type": "http.request", "body": chunks[handed - 1], "more_body": handed < len(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return starts[0]["status"], (json.loads(body) if body != b"ok" else {}), handed


def test_a_declared_length_over_the_limit_is_refused_without_reading() -> None:
    route = Route()
    guard = RequestGuard(route, Settings(max_prompt_chars=1000))
    status, body, handed = call(guard, "/healthz", {"content-length": str(10**9)}, [b"x"])
    assert (status, handed, route.reads) == (413, 0, 0)
    assert body["error"]["code"] == "request_too_large"
    assert f"at most {8 * 1000 + 1024 * 1024} bytes" in body["error"]["message"]


def test_a_streamed_body_is_cut_at_the_limit_and_the_rest_never_asked_for() -> None:
    route = Route()
    guard = RequestGuard(route, Settings(max_json_body_bytes=4096))
    chunks = [b"x" * 1024] * 100
    status, body, handed = call(guard, "/healthz", {}, chunks)
    assert status == 413 and body["error"]["code"] == "request_too_large"  # the route's own 400 was replaced
    assert handed == 5  # 5 KiB passed 4 KiB: nothing after that chunk was received
    within = call(RequestGuard(Route(), Settings(max_json_body_bytes=4096)), "/healthz", {}, [b"x" * 1024] * 4)
    assert within[0] == 200


def test_uploads_have_their_own_larger_limit() -> None:
    guard = RequestGuard(Route(), Settings(max_batch_file_bytes=100_000, max_json_body_bytes=4096))
    assert guard.limit_for("POST", "/v1/files") == 100_000 + MULTIPART_SLACK
    assert guard.limit_for("POST", "/v1/jobs") == 4096
    status, _, _ = call(guard, "/healthz", {"content-length": "5000"}, [b""])
    assert status == 413


def test_the_metrics_token_comes_from_the_setting_the_file_or_a_generated_private_file(tmp_path: Path) -> None:
    assert metrics_token(Settings(home=tmp_path, metrics_token=" given ")) == "given"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert metrics_token(Settings(home=tmp_path, metrics_token_file=token_file)) == "from-file"
    with pytest.raises(ConfigError, match="FEDGATE_METRICS_TOKEN_FILE"):
        metrics_token(Settings(home=tmp_path, metrics_token_file=tmp_path / "missing"))
    generated = metrics_token(Settings(home=tmp_path / "home"))
    path = tmp_path / "home" / "metrics-token"
    assert len(generated) >= 32 and path.read_text().strip() == generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert metrics_token(Settings(home=tmp_path / "home")) == generated  # kept across restarts


def test_compose_hands_prometheus_the_token_the_api_asks_for() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    required = "${FEDGATE_METRICS_TOKEN:?"
    assert str(services["api"]["environment"]["FEDGATE_METRICS_TOKEN"]).startswith(required), "no token: no start"
    writer = services["metrics-token"]
    assert str(writer["environment"]["FEDGATE_METRICS_TOKEN"]).startswith(required)
    assert "/run/fedgate/metrics-token" in " ".join(writer["command"]) and "metrics-token:/run/fedgate" in writer[
        "volumes"]
    assert "metrics-token:/run/fedgate:ro" in services["prometheus"]["volumes"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    api_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "fedgate-api")
    assert api_job["authorization"] == {"type": "Bearer", "credentials_file": "/run/fedgate/metrics-token"}


def test_the_request_models_state_what_the_api_enforces() -> None:
    job = JobSubmission.model_json_schema()
    assert job["additionalProperties"] is False
    assert {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}} in job["oneOf"]
    metadata = job["properties"]["metadata"]
    assert metadata["maxProperties"] == 16
    assert metadata["propertyNames"]["maxLength"] == 64 and metadata["additionalProperties"]["maxLength"] == 512
    assert job["properties"]["temperature"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 2}
    chat = ChatCompletionRequest.model_json_schema()
    assert chat["additionalProperties"] is False
    assert chat["properties"]["messages"]["maxItems"] == 1000
    assert chat["properties"]["stream"]["type"] == "boolean"  # streamed through the fleet (issue 16)
