"""`fedgate submit` as a user runs it against a running fleet: the answer, the whole job with --json, a contract's
validated JSON with --contract, and a clear failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.helpers import ROOT, FleetEnv, Proc

SCHEMA = {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]},
                                          "score": {"type": "number"}},
          "required": ["sentiment", "score"]}


def fedgate(fleet: FleetEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_api.cli", *args], env=fleet.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def contract(api: httpx.Client) -> str:
    name = "cli-sentiment-" + os.urandom(3).hex()
    response = api.post("/v1/admin/contracts", json={"name": name, "schema": SCHEMA})
    assert response.status_code == 201, response.text
    return name


def test_wait_prints_the_answer_and_json_prints_the_whole_job(fleet: FleetEnv, worker: Proc) -> None:
    plain = fedgate(fleet, "submit", "--partner", "sim-openai", "--prompt", "hello cli", "--wait")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "Simulated reply from sim-openai: hello cli"
    whole = fedgate(fleet, "submit", "--partner", "sim-openai", "--prompt", "hello json", "--wait", "--json")
    assert whole.returncode == 0, whole.stderr
    job = json.loads(whole.stdout)
    assert job["status"] == "succeeded" and job["output"].endswith("hello json") and job["history"]
    accepted = json.loads(fedgate(fleet, "submit", "--partner", "sim-openai", "--prompt", "later", "--json").stdout)
    assert accepted["id"].startswith("job_") and accepted["partner"] == "sim-openai"


def test_contract_prints_the_validated_object(fleet: FleetEnv, worker: Proc, contract: str) -> None:
    done = fedgate(fleet, "submit", "--partner", "sim-openai", "--prompt", "Classify: great service", "--wait",
                   "--contract", contract)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sentiment": "positive", "score": 1.0}


def test_an_unknown_contract_is_refused_with_the_reason(fleet: FleetEnv, worker: Proc) -> None:
    done = fedgate(fleet, "submit", "--partner", "sim-openai", "--prompt", "x", "--contract", "no-such-contract")
    assert done.returncode == 1
    assert "no-such-contract" in done.stderr and done.stdout == ""


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway_api.cli", "--version"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("fedgate 0.")
