"""Tenant key rotation without a cutover: the API re-reads its config on SIGHUP (or `fedgate reload`), serves new
requests with it, and refuses a config that does not load in one log line, keeping the previous one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway_core.config import sha256_hex
from tests.conftest import TEST_CONFIG
from tests.helpers import ROOT, FleetEnv, Proc, free_port, http_ok, wait_for

OLD_KEY = "rotation-old-" + os.urandom(12).hex()
NEW_KEY = "rotation-new-" + os.urandom(12).hex()
TENANT = "rotating"
ADDED_ROUTE = "rotated-model"


@dataclass
class PrivateApi:
    proc: Proc
    url: str
    config: Path
    env: dict[str, str]

    def status_with_key(self, key: str) -> int:
        """An authenticated request for a job nobody has: 404 once the key authenticates, 401 while it does not."""
        response = httpx.get(f"{self.url}/v1/jobs/job_{'0' * 24}", headers={"authorization": f"Bearer {key}"},
                             timeout=10)
        assert response.status_code in (401, 404), response.text
        return response.status_code

    def models(self, key: str) -> list[str]:
        response = httpx.get(f"{self.url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10)
        response.raise_for_status()
        return [model["id"] for model in response.json()["data"]]

    def log_lines_with(self, text: str) -> list[str]:
        return [line for line in self.proc.output().splitlines() if text in line]

    def sighup_and_wait_for_verdict(self, verdict: str) -> None:
        before = len(self.log_lines_with(verdict))
        self.proc.process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(self.log_lines_with(verdict)) > before or self.proc.process.poll() is not None, 30,
                 what=f"the API to log {verdict!r}")
        assert self.proc.process.poll() is None, self.proc.output()[-3000:]


def write_config(path: Path, *, digests: list[str], extra_route: bool = False) -> None:
    """The session's fleet config, plus a tenant whose keys are given by digest; written whole, then renamed."""
    config: dict[str, Any] = yaml.safe_load(TEST_CONFIG.read_text())
    config["tenants"][TENANT] = {"api_key_sha256": digests}
    if extra_route:
        config["routes"][ADDED_ROUTE] = "sim-openai"
    replace_file(path, yaml.safe_dump(config))


def replace_file(path: Path, text: str) -> None:
    draft = path.with_suffix(".draft")
    draft.write_text(text)
    draft.replace(path)


@pytest.fixture()
def private_api(tmp_path: Path, fleet: FleetEnv) -> Iterator[PrivateApi]:
    """An API process of its own (own port and config file) on the session's Redis, home and simulator."""
    config = tmp_path / "fedgate.yaml"
    write_config(config, digests=[sha256_hex(OLD_KEY)])
    port = free_port()
    env = {**fleet.env, "FEDGATE_CONFIG": str(config), "FEDGATE_API_PORT": str(port),
           "FEDGATE_API_URL": f"http://127.0.0.1:{port}"}
    procs = FleetEnv(tmp_path, env)
    proc = procs.spawn("api", "api")
    wait_for(lambda: http_ok(f"{env['FEDGATE_API_URL']}/healthz") or proc.process.poll() is not None, 30,
             what="private api")
    assert proc.process.poll() is None, proc.output()[-3000:]
    try:
        yield PrivateApi(proc, env["FEDGATE_API_URL"], config, env)
    finally:
        procs.stop_all()


def fedgate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_api.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def as_fleet_home(home: Path, api: PrivateApi) -> dict[str, str]:
    """A FEDGATE_HOME in which `fedgate reload` finds `api` as the API of a running fleet: the fleet file `fedgate
    up` writes (this test process standing in for the supervisor) and the API's log where `fedgate up` keeps it."""
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "api.log").symlink_to(api.proc.log)
    (home / "fleet.json").write_text(json.dumps({"supervisor": os.getpid(),
                                                 "children": {"api": api.proc.process.pid}}))
    return {**api.env, "FEDGATE_HOME": str(home)}


def test_keys_rotate_without_a_cutover_and_a_bad_config_is_refused(private_api: PrivateApi, tmp_path: Path) -> None:
    api = private_api
    assert api.status_with_key(OLD_KEY) == 404
    assert api.status_with_key(NEW_KEY) == 401

    # 1. both keys: the new one starts to work, the old one keeps working; the rest of the config follows
    write_config(api.config, digests=[sha256_hex(NEW_KEY), sha256_hex(OLD_KEY)], extra_route=True)
    api.sighup_and_wait_for_verdict("config reloaded")
    wait_for(lambda: api.status_with_key(NEW_KEY) == 404, 30, what="the new key to authenticate")
    assert api.status_with_key(OLD_KEY) == 404
    assert ADDED_ROUTE in api.models(NEW_KEY)

    # 2. only the new key, through `fedgate reload`: the old key is refused
    write_config(api.config, digests=[sha256_hex(NEW_KEY)])
    reload_env = as_fleet_home(tmp_path / "fleet-home", api)
    reloaded = fedgate(reload_env, "reload")
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    assert "config reloaded" in reloaded.stdout
    wait_for(lambda: api.status_with_key(OLD_KEY) == 401, 30, what="the old key to be refused")
    assert api.status_with_key(NEW_KEY) == 404
    assert ADDED_ROUTE not in api.models(NEW_KEY)

    # 3. an operator pastes the key itself where its digest belongs: refused, the previous config keeps serving
    replace_file(api.config, api.config.read_text().replace(sha256_hex(NEW_KEY), NEW_KEY))
    refused = fedgate(reload_env, "reload")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "config reload refused" in refused.stderr
    assert f"tenants.{TENANT}.api_key_sha256" in refused.stderr
    assert api.status_with_key(NEW_KEY) == 404
    assert api.status_with_key(OLD_KEY) == 401
    api.sighup_and_wait_for_verdict("config reload refused")
    assert api.proc.process.poll() is None
    assert api.status_with_key(NEW_KEY) == 404

    refusals = api.log_lines_with("config reload refused")
    assert len(refusals) == 2  # one line per refused reload
    assert all(f"tenants.{TENANT}.api_key_sha256" in line for line in refusals)
    assert len(api.log_lines_with("config reloaded")) == 2
    log = api.proc.output()
    assert NEW_KEY not in log and OLD_KEY not in log
    assert "Traceback" not in log

    token = (Path(api.env["FEDGATE_HOME"]) / "metrics-token").read_text().strip()
    metrics = httpx.get(f"{api.url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10).text
    assert 'fedgate_config_reloads_total{result="applied"} 2.0' in metrics
    assert 'fedgate_config_reloads_total{result="refused"} 2.0' in metrics

    # SIGTERM still shuts the API down gracefully (uvicorn's handler, not ours)
    api.proc.process.send_signal(signal.SIGTERM)
    assert api.proc.process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_reload_without_a_running_fleet_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_") and k != "REDIS_URL"}
    env["FEDGATE_HOME"] = str(tmp_path / "empty-home")
    result = fedgate(env, "reload")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no fleet is running" in lines[0]
    assert "fedgate up" in lines[0]
