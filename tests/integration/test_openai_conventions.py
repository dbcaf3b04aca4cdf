"""OpenAI's conventions on every answer: `x-request-id`, the `{"error": {...}}` shape for unknown routes and
methods, 400 for invalid bodies on the OpenAI paths, and the `server_error` type for a 5xx."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.helpers import FleetEnv, Proc


@pytest.fixture()
def anonymous(fleet: FleetEnv) -> httpx.Client:
    with httpx.Client(base_url=fleet.env["FEDGATE_API_URL"], timeout=30) as client:
        yield client


def test_every_answer_carries_a_request_id(api: httpx.Client, anonymous: httpx.Client) -> None:
    answers = [
        api.get("/v1/models"),                                        # 200
        anonymous.get("/v1/models"),                                  # 401 from the key guard
        api.get("/v1/no-such-route"),                                 # 404
        api.put("/v1/models"),                                        # 405
        api.post("/v1/chat/completions", content=b"{not json"),       # 400
        api.post("/v1/jobs", json={"partner": "sim-openai"}),         # 422
        api.post("/v1/chat/completions", content=b"x" * 50_000_000),  # 413 before the body is read
        anonymous.get("/healthz"),
    ]
    ids = [answer.headers.get("x-request-id") for answer in answers]
    assert all(ids) and len(set(ids)) == len(ids), [(a.status_code, a.headers.get("x-request-id")) for a in answers]
    assert [a.status_code for a in answers] == [200, 401, 404, 405, 400, 422, 413, 200]


def test_a_callers_request_id_is_kept_and_a_bad_one_replaced(api: httpx.Client) -> None:
    assert api.get("/v1/models", headers={"x-request-id": "trace-42.a:b"}).headers["x-request-id"] == "trace-42.a:b"
    replaced = api.get("/v1/models", headers={"x-request-id": "bad id\twith spaces"}).headers["x-request-id"]
    assert replaced.startswith("req_")


def test_unknown_routes_and_methods_answer_in_openai_shape(api: httpx.Client) -> None:
    for answer, code in ((api.get("/v1/nothing/here"), "not_found"), (api.delete("/v1/models"),
                                                                      "method_not_allowed")):
        error = answer.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
        assert "detail" not in answer.json()


def test_the_sdk_sees_the_request_id_and_a_server_error(fleet: FleetEnv, sim: httpx.Client, worker: Proc) -> None:
    sdk = openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-dev", max_retries=0)
    completion = sdk.chat.completions.with_raw_response.create(
        model="sim-openai", messages=[{"role": "user", "content": "hi"}])
    assert completion.request_id and completion.request_id.startswith("req_")
    sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 1, "error_status": 400})
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="sim-anthropic", messages=[{"role": "user", "content": "hi"}])
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 0})
    assert caught.value.status_code == 502 and caught.value.request_id
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]
