"""Issue 6 (first part): the official openai SDK works against the gateway with only base_url and key changed."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.helpers import FleetEnv, Proc


@pytest.fixture()
def sdk(fleet: FleetEnv) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-dev", max_retries=0)


def test_chat_completion_through_the_fleet(sdk: openai.OpenAI, api: httpx.Client, worker: Proc) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="sim-openai",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Mail bob@example.org"}],
        max_tokens=50,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    # The partner saw a placeholder; the app gets its own data back.
    assert completion.choices[0].message.content == "Simulated reply from sim-openai: Mail bob@example.org"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    job_id = raw.headers["x-fedgate-job-id"]
    job = api.get(f"/v1/jobs/{job_id}").json()  # still a job: visible, audited
    assert job["status"] == "succeeded"
    assert job["redaction_audit"]["sim-openai"] == {"EMAIL_ADDRESS": 1}


def test_a_route_names_a_partner(sdk: openai.OpenAI, worker: Proc) -> None:
    completion = sdk.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Simulated reply from sim-anthropic: hi"
    assert completion.model == "fast-model"


def test_models_are_listed(sdk: openai.OpenAI) -> None:
    assert {"sim-openai", "sim-anthropic", "fast-model"} <= {m.id for m in sdk.models.list()}


def test_errors_reach_the_sdk_as_its_own_exceptions(sdk: openai.OpenAI, fleet: FleetEnv) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    bad_key = openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        bad_key.chat.completions.create(model="sim-openai", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="messages"):  # OpenAI answers an invalid body with 400
        sdk.chat.completions.create(model="sim-openai", messages=[])
    with pytest.raises(openai.BadRequestError, match="logit_bias: this field is not supported"):
        sdk.chat.completions.create(model="sim-openai", messages=[{"role": "user", "content": "hi"}],
                                    logit_bias={"50256": -100})
    with pytest.raises(openai.BadRequestError, match="stream"):  # streaming: tests/integration/test_openai_streaming.py
        sdk.chat.completions.create(model="sim-openai", messages=[{"role": "user", "content": "hi"}], stream="yes")


def test_a_failed_job_is_a_server_error(sdk: openai.OpenAI, sim: httpx.Client, worker: Proc) -> None:
    sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 1, "error_status": 400})
    try:
        with pytest.raises(openai.InternalServerError, match="dead_lettered"):
            sdk.chat.completions.create(model="sim-anthropic", messages=[{"role": "user", "content": "hi"}])
    finally:
        sim.put("/_sim/partners/sim-anthropic", json={"error_rate": 0})
