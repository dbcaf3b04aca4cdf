"""Issue 3 details: retention, the redact CLI, and workers refusing policies they cannot enforce."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from tests.helpers import ROOT, FleetEnv


def test_retention_zero_deletes_the_payload_at_completion_but_the_long_poller_gets_the_output(
    api: httpx.Client, fleet: FleetEnv, fleet_redis: redis.Redis
) -> None:
    forgetful = fleet.start_worker("sim-anthropic-forgetful")
    try:
        job_id = api.post("/v1/jobs", json={"partner": "sim-anthropic-forgetful", "prompt": "keep nothing"}).json()[
            "id"
        ]
        job = api.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
    finally:
        forgetful.stop()
    assert job["status"] == "succeeded"
    assert job["output"] == "Simulated reply from sim-anthropic: keep nothing"  # delivered with the completion
    stored = fleet_redis.hgetall(f"fg:job:{job_id}")
    assert not {"messages", "output", "placeholder_map"} & set(stored)
    later = api.get(f"/v1/jobs/{job_id}").json()
    assert later["output"] is None and later["payload_retained"] is False
    assert later["status"] == "succeeded" and later["usage"]["completion_tokens"] > 0  # metadata kept


def test_redact_cli_prints_offsets_and_placeholders(fleet: FleetEnv) -> None:
    text = "Write to ana@example.com, card 4111 1111 1111 1111."
    result = subprocess.run(
        [sys.executable, "-m", "gateway_api.cli", "redact", "--partner", "sim-openai"],
        input=text,
        env=fleet.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["text"] == "Write to <EMAIL_ADDRESS_1>, card <CREDIT_CARD_1>."
    email = out["entities"][0]
    assert (email["type"], text[email["start"] : email["end"]], email["placeholder"]) == (
        "EMAIL_ADDRESS",
        "ana@example.com",
        "<EMAIL_ADDRESS_1>",
    )
    lines = subprocess.run(
        [sys.executable, "-m", "gateway_api.cli", "redact", "--partner", "sim-openai", "--jsonl"],
        input='{"text": "ip 10.0.0.7"}\n{"text": "nothing"}\n',
        env=fleet.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["ip <IP_ADDRESS_1>", "nothing"]


def _start_worker_on(partner: str, settings_yaml: str, fleet: FleetEnv, tmp_path: Path,
                     **env: str) -> subprocess.CompletedProcess[str]:
    """`fedgate worker` for a config of one partner with these settings (indented lines under its name)."""
    config = tmp_path / "one-partner.yaml"
    config.write_text(f"partners:\n  {partner}:\n    adapter: openai\n    base_url: http://127.0.0.1:9/v1\n"
                      f"    model: m\n{settings_yaml}tenants:\n  t:\n    api_key: k\n")
    return subprocess.run(
        [sys.executable, "-m", "gateway_api.cli", "worker", "--partners", partner],
        env={**fleet.env, "FEDGATE_CONFIG": str(config), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_refuses_to_start_with_a_policy_it_cannot_enforce(fleet: FleetEnv, tmp_path: Path) -> None:
    result = _start_worker_on("strict", "    policy: {entities: [PERSON, EMAIL_ADDRESS]}\n", fleet, tmp_path)
    assert result.returncode == 2
    assert "PERSON" in result.stderr and "spaCy" in result.stderr


def test_a_worker_refuses_to_start_when_a_call_can_outlast_the_visibility_timeout(fleet: FleetEnv,
                                                                                   tmp_path: Path) -> None:
    result = _start_worker_on("slow", "    timeout_s: 90\n    contract_repairs: 1\n", fleet, tmp_path,
                              FEDGATE_VISIBILITY_TIMEOUT_S="120")
    assert result.returncode == 2
    assert "partner 'slow': one attempt can call it for 180 s" in result.stderr
    assert "raise FEDGATE_VISIBILITY_TIMEOUT_S or lower the partner's timeout_s" in result.stderr
