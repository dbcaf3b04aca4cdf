"""Operators inspect, replay and purge dead letters through the API and the CLI, against the real fleet."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from gateway_api.cli_dlq import dlq_app
from tests.helpers import FleetEnv, Proc, calls_with, wait_for

TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}
PARTNERS = ("sim-openai", "sim-anthropic")
DLQ = "/v1/admin/dead-letters"


@pytest.fixture(scope="module")
def worker(fleet: FleetEnv) -> Iterator[Proc]:
    proc = fleet.start_worker(",".join(PARTNERS))
    yield proc
    proc.stop()


def finished(api: httpx.Client, job_id: str, wait: float = 20) -> dict:
    return wait_for(
        lambda: (j := api.get(f"/v1/jobs/{job_id}", params={"wait": wait}).json())["status"] in TERMINAL and j,
        timeout=wait * 3, what=f"job {job_id} to finish",
    )


def set_failing(sim: httpx.Client, failing: bool) -> None:
    for partner in PARTNERS:
        body = {"error_rate": 1, "error_status": 400} if failing else {"error_rate": 0}
        assert sim.put(f"/_sim/partners/{partner}", json=body).status_code == 200


def dead_letter(api: httpx.Client, sim: httpx.Client, prompt: str) -> dict:
    """Submit a job while both partners answer 400 (fatal): sim-openai, then its fallback, then the DLQ."""
    set_failing(sim, True)
    try:
        accepted = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": prompt})
        assert accepted.status_code == 202, accepted.text
        job = finished(api, accepted.json()["id"])
    finally:
        set_failing(sim, False)
    assert job["status"] == "dead_lettered", job
    return job


def listed_ids(api: httpx.Client, **params: object) -> list[str]:
    response = api.get(DLQ, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def secret_prompt() -> str:
    return f"Confidential note {secrets.token_hex(6)}: patient Jane Roe"


def test_a_dead_letter_is_inspected_and_replayed_under_the_same_id(
    api: httpx.Client, sim: httpx.Client, worker: Proc
) -> None:
    prompt = secret_prompt()
    job = dead_letter(api, sim, prompt)
    job_id = job["id"]

    detail = api.get(f"{DLQ}/{job_id}")
    assert detail.status_code == 200, detail.text
    shown = detail.json()
    assert [(a["partner"], a["attempt"], a["outcome"], a["status_code"]) for a in shown["history"]] == [
        ("sim-openai", 1, "fatal", 400), ("sim-anthropic", 2, "fatal", 400)]
    assert all(a["error"].startswith("HTTP 400") for a in shown["history"])
    assert (shown["requested_partner"], shown["last_partner"], shown["attempts"]) == ("sim-openai", "sim-anthropic", 2)
    assert shown["tenant"] == "dev" and shown["status"] == "dead_lettered"
    assert "sim-anthropic" in shown["error"]

    listing = api.get(DLQ, params={"limit": 500, "partner": "sim-anthropic"})
    assert listing.status_code == 200
    item = next(i for i in listing.json()["items"] if i["id"] == job_id)
    assert (item["tenant"], item["requested_partner"], item["last_partner"]) == ("dev", "sim-openai", "sim-anthropic")
    assert (item["attempts"], item["last_status_code"]) == (2, 400)
    for body in (detail.text, listing.text):  # never the prompt, never its ciphertext
        assert prompt not in body and "Jane Roe" not in body and "gAAAA" not in body

    replayed = api.post(f"{DLQ}/{job_id}/replay", json={"partner": "sim-anthropic"})
    assert replayed.status_code == 202, replayed.text
    assert replayed.json() == {"id": job_id, "status": "queued", "partner": "sim-anthropic", "attempt": 3}
    assert job_id not in listed_ids(api)

    done = finished(api, job_id)
    assert done["id"] == job_id
    assert done["status"] == "succeeded", done
    assert done["answered_by"] == "sim-anthropic"
    assert done["output"] == f"Simulated reply from sim-anthropic: {prompt}"
    assert [(a["partner"], a["outcome"]) for a in done["history"]] == [
        ("sim-openai", "fatal"), ("sim-anthropic", "fatal"), ("sim-anthropic", "replayed"), ("sim-anthropic", "ok")]
    assert calls_with(sim, "sim-anthropic", prompt.split(":")[0]) == 2  # the fatal call, then the replay's one call

    assert job_id not in listed_ids(api)
    gone = api.get(f"{DLQ}/{job_id}")
    assert gone.status_code == 404
    assert "not dead-lettered (status: succeeded)" in gone.json()["error"]["message"]


def test_replay_without_a_partner_uses_the_requested_one(api: httpx.Client, sim: httpx.Client, worker: Proc) -> None:
    job_id = dead_letter(api, sim, secret_prompt())["id"]
    replayed = api.post(f"{DLQ}/{job_id}/replay")
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["partner"] == "sim-openai"
    done = finished(api, job_id)
    assert (done["status"], done["answered_by"]) == ("succeeded", "sim-openai")


def test_replay_refusals_say_what_was_wrong(api: httpx.Client, sim: httpx.Client, worker: Proc) -> None:
    ok = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "fine"}).json()["id"]
    assert finished(api, ok)["status"] == "succeeded"
    conflict = api.post(f"{DLQ}/{ok}/replay", json={"partner": "sim-anthropic"})
    assert conflict.status_code == 409
    message = conflict.json()["error"]["message"]
    assert f"job {ok!r} is not dead-lettered (status: succeeded)" in message
    assert conflict.json()["error"]["code"] == "not_dead_lettered"

    job_id = dead_letter(api, sim, secret_prompt())["id"]
    unknown = api.post(f"{DLQ}/{job_id}/replay", json={"partner": "nobody"})
    assert unknown.status_code == 404  # as POST /v1/jobs answers an unknown partner
    says = unknown.json()["error"]["message"]
    assert "unknown partner 'nobody': replay to one of " in says and "sim-anthropic" in says and "sim-openai" in says
    extra = api.post(f"{DLQ}/{job_id}/replay", json={"partner": "sim-openai", "priority": 1})
    assert extra.status_code == 400 and "priority" in extra.json()["error"]["message"]
    missing = api.post(f"{DLQ}/job_{'0' * 24}/replay")
    assert missing.status_code == 404 and "no job" in missing.json()["error"]["message"]
    assert job_id in listed_ids(api)  # none of that touched the dead letter
    assert api.delete(f"{DLQ}/{job_id}").status_code == 200


def test_purge_one_and_purge_older_than(api: httpx.Client, sim: httpx.Client, worker: Proc) -> None:
    job_id = dead_letter(api, sim, secret_prompt())["id"]
    assert api.delete(DLQ, params={"older_than_s": 10 * 365 * 86400}).json() == {"purged": 0}
    assert job_id in listed_ids(api)
    purged = api.delete(f"{DLQ}/{job_id}")
    assert purged.status_code == 200 and purged.json() == {"purged": 1}
    assert job_id not in listed_ids(api)
    assert api.get(f"/v1/jobs/{job_id}").status_code == 404  # the record is gone too
    again = api.delete(f"{DLQ}/{job_id}")
    assert again.status_code == 404 and "no job" in again.json()["error"]["message"]
    assert api.delete(DLQ, params={"older_than_s": -1}).status_code == 422


def test_only_admin_tenants_may_use_the_dead_letter_queue(fleet: FleetEnv) -> None:
    base = fleet.env["FEDGATE_API_URL"] + DLQ
    other = {"authorization": "Bearer test-key-other"}
    job = f"job_{'0' * 24}"
    for method, url in (("GET", base), ("GET", f"{base}/{job}"), ("POST", f"{base}/{job}/replay"),
                        ("DELETE", f"{base}/{job}"), ("DELETE", base)):
        response = httpx.request(method, url, headers=other)
        assert response.status_code == 403, (method, url, response.text)
        assert "tenant 'other' is not an operator" in response.json()["error"]["message"]
        assert "admin" in response.json()["error"]["message"]
    assert httpx.get(base).status_code == 401


def test_the_cli_lists_shows_replays_and_purges(
    api: httpx.Client, sim: httpx.Client, fleet: FleetEnv, worker: Proc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDGATE_API_URL", fleet.env["FEDGATE_API_URL"])
    monkeypatch.setenv("FEDGATE_API_KEY", "test-key-dev")
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    first = dead_letter(api, sim, secret_prompt())["id"]
    second = dead_letter(api, sim, secret_prompt())["id"]

    listed = runner.invoke(dlq_app, ["list", "--json", "--limit", "500"])
    assert listed.exit_code == 0, listed.output
    assert {first, second} <= {i["id"] for i in json.loads(listed.output)["items"]}
    table = runner.invoke(dlq_app, ["list", "--partner", "sim-anthropic"])
    assert table.exit_code == 0, table.output
    assert "Dead letters" in table.output and first in table.output

    shown = runner.invoke(dlq_app, ["show", first])
    assert shown.exit_code == 0 and json.loads(shown.output)["id"] == first

    replayed = runner.invoke(dlq_app, ["replay", first, "--partner", "sim-anthropic"])
    assert replayed.exit_code == 0, replayed.output
    assert f"replayed {first} to sim-anthropic (attempt 3)" in replayed.output
    assert finished(api, first)["status"] == "succeeded"
    refused = runner.invoke(dlq_app, ["replay", first])
    assert refused.exit_code == 1 and "not dead-lettered (status: succeeded)" in refused.output

    unconfirmed = runner.invoke(dlq_app, ["purge", "--all"])
    assert unconfirmed.exit_code != 0 and second in listed_ids(api)
    assert runner.invoke(dlq_app, ["purge"]).exit_code == 1
    purged = runner.invoke(dlq_app, ["purge", second])
    assert purged.exit_code == 0 and f"purged {second}" in purged.output
    assert second not in listed_ids(api)
    old_only = runner.invoke(dlq_app, ["purge", "--all", "--older-than", str(10 * 365 * 86400), "--yes"])
    assert old_only.exit_code == 0 and "purged 0 dead letters" in old_only.output
