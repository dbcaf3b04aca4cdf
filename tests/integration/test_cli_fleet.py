"""The user's first commands: `fedgate up --detach`, `fedgate submit --wait`, `fedgate down`, and their errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, free_port, http_ok


def fedgate(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_api.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def fresh_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_") and k != "REDIS_URL"}
    env.update({
        "FEDGATE_HOME": str(home),
        "FEDGATE_API_PORT": str(free_port()),
        "FEDGATE_FLOWER_PORT": str(free_port()),
        "FEDGATE_SIMULATOR_PORT": str(free_port()),
        "FEDGATE_EMBEDDED_REDIS_PORT": str(free_port()),
    })
    env["FEDGATE_SIMULATOR_URL"] = f"http://127.0.0.1:{env['FEDGATE_SIMULATOR_PORT']}"
    env["FEDGATE_API_URL"] = f"http://127.0.0.1:{env['FEDGATE_API_PORT']}"
    return env


def test_up_detach_submit_wait_and_down_on_the_embedded_default(tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    up = fedgate(env, "up", "--detach", "--no-flower")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert env["FEDGATE_API_URL"] in up.stdout
        key = (tmp_path / "home" / "dev-api-key").read_text().strip()
        assert key in up.stdout
        assert (tmp_path / "home" / "dev-webhook-secret").read_text().startswith("whsec_")
        assert (tmp_path / "home" / "redis" / "appendonlydir").exists() or any(
            p.name.startswith("appendonly") for p in (tmp_path / "home" / "redis").iterdir())
        done = fedgate(env, "submit", "--partner", "sim-openai", "--prompt", "hello fleet", "--wait", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        job = json.loads(done.stdout)
        assert job["status"] == "succeeded"
        assert job["output"] == "Simulated reply from sim-openai: hello fleet"
        assert {"id", "answered_by", "attempts", "usage", "timings_ms"} <= set(job)
        queued = fedgate(env, "submit", "--partner", "sim-anthropic", "--prompt", "no wait")
        assert queued.stdout.strip().startswith("job_")
        shown = json.loads(fedgate(env, "job", queued.stdout.strip()).stdout)
        assert shown["id"] == queued.stdout.strip()
    finally:
        down = fedgate(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not http_ok(f"{env['FEDGATE_API_URL']}/healthz")


def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["FEDGATE_API_PORT"])))
        taken.listen()
        result = fedgate(env, "up", "--no-flower")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {env['FEDGATE_API_PORT']} (API) is in use" in lines[0]


def test_a_bad_config_is_one_line_naming_the_field(tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partners:\n  p:\n    adapter: smoke-signals\n    base_url: http://x\n    model: m\n"
                   "tenants:\n  t:\n    api_key: k\n")
    env["FEDGATE_CONFIG"] = str(bad)
    result = fedgate(env, "up", "--no-flower")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "partners.p.adapter" in lines[0] and "fix this field" in lines[0]
