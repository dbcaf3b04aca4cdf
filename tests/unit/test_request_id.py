"""The request-id middleware answers a crash in OpenAI's error shape with the id, and never twice."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway_api.request_id import RequestId


def app_that_fails() -> FastAPI:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail that must not reach the client")

    @app.get("/fine")
    async def fine() -> dict[str, bool]:
        return {"ok": True}

    app.add_middleware(RequestId)
    return app


def test_a_crash_is_a_server_error_with_the_request_id() -> None:
    with TestClient(app_that_fails(), raise_server_exceptions=False) as client:
        answer = client.get("/boom", headers={"x-request-id": "abc-1"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "abc-1"
    error = answer.json()["error"]
    assert error["type"] == "server_error" and "abc-1" in error["message"]
    assert "secret detail" not in answer.text


def test_each_answer_gets_its_own_id() -> None:
    with TestClient(app_that_fails()) as client:
        first, second = client.get("/fine"), client.get("/fine")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert first.headers.get_list("x-request-id") == [first.headers["x-request-id"]]
