"""`fedgate up` as an operator runs it (real processes, the embedded Redis, Flower): a child that dies is restarted
and the fleet keeps working; the embedded Redis asks for its generated password; Flower asks for the login kept in
a 0600 file; no password is on any process's command line or in any log. `fedgate down` stops every process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import ROOT, free_port, wait_for


def fedgate(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_api.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Up:
    home: Path
    env: dict[str, str]
    announced: str

    def fleet_file(self) -> dict[str, Any]:
        return json.loads((self.home / "fleet.json").read_text())  # type: ignore[no-any-return]

    def pids(self) -> dict[str, int]:
        data = self.fleet_file()
        return {**data["children"], **({"redis": data["redis"]} if "redis" in data else {}),
                "supervisor": data["supervisor"]}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a child the supervisor has not reaped yet is a zombie: gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    home = tmp_path_factory.mktemp("supervised") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_") and k != "REDIS_URL"}
    env.update({"FEDGATE_HOME": str(home), "FEDGATE_API_PORT": str(free_port()),
                "FEDGATE_FLOWER_PORT": str(free_port()), "FEDGATE_SIMULATOR_PORT": str(free_port()),
                "FEDGATE_EMBEDDED_REDIS_PORT": str(free_port())})
    env["FEDGATE_SIMULATOR_URL"] = f"http://127.0.0.1:{env['FEDGATE_SIMULATOR_PORT']}"
    env["FEDGATE_API_URL"] = f"http://127.0.0.1:{env['FEDGATE_API_PORT']}"
    started = fedgate(env, "up", "--detach")
    fleet = Up(home, env, started.stdout)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield fleet
    finally:
        pids = fleet.pids() if (home / "fleet.json").exists() else {}
        down = fedgate(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        wait_for(lambda: not any(alive(pid) for pid in pids.values()), 30, what="every process of the fleet to stop")


def test_a_killed_worker_is_restarted_and_the_fleet_keeps_working(up: Up) -> None:
    before = up.pids()
    victim = before["worker-sim-openai"]
    log = up.home / "logs" / "worker-sim-openai.log"
    wait_for(lambda: "ready." in log.read_text(errors="replace"), 60, what="the worker to be ready")
    seen = log.stat().st_size
    os.kill(victim, signal.SIGKILL)

    def replaced() -> int | None:
        if not (up.home / "fleet.json").exists():
            return None  # the fleet stopped
        pid = up.pids()["worker-sim-openai"]
        return pid if pid != victim and alive(pid) else None

    successor = wait_for(replaced, 30, what="a new worker-sim-openai")
    assert up.fleet_file()["restarts"]["worker-sim-openai"] == 1
    wait_for(lambda: "ready." in log.read_bytes()[seen:].decode(errors="replace"), 60, what="the new worker ready")
    after = up.pids()
    assert {n: p for n, p in after.items() if n != "worker-sim-openai"} == {
        n: p for n, p in before.items() if n != "worker-sim-openai"}  # nobody else was touched, the fleet is up
    assert all(alive(pid) for pid in after.values()) and after["worker-sim-openai"] == successor
    assert f"worker-sim-openai (pid {victim}) exited with code -9; restarting it in" in (
        up.home / "fleet.log").read_text()
    done = fedgate(up.env, "submit", "--partner", "sim-openai", "--prompt", "after the restart", "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"


def test_the_embedded_redis_refuses_a_client_without_its_generated_password(up: Up) -> None:
    password_file = up.home / "redis-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    port = int(up.env["FEDGATE_EMBEDDED_REDIS_PORT"])
    with redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0)) as stranger, \
            pytest.raises(redis.exceptions.AuthenticationError):
        stranger.dbsize()
    with redis.Redis(host="127.0.0.1", port=port, password=password) as client:
        assert client.ping()


def test_flower_asks_for_the_login_kept_in_its_file(up: Up) -> None:
    login_file = up.home / "flower-auth"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    user, _, password = login_file.read_text().strip().partition(":")
    assert user == "operator" and password
    assert f"(login in {login_file})" in up.announced
    flower = f"http://127.0.0.1:{up.env['FEDGATE_FLOWER_PORT']}"

    def answer() -> int | None:
        try:
            return httpx.get(f"{flower}/workers", timeout=2).status_code
        except httpx.HTTPError:
            return None

    assert wait_for(answer, 60, what="Flower to answer") == 401
    assert httpx.get(f"{flower}/workers", auth=(user, "wrong"), timeout=5).status_code == 401
    assert httpx.get(f"{flower}/workers", auth=(user, password), timeout=5).status_code == 200


def test_no_password_is_on_a_command_line_or_in_a_log(up: Up) -> None:
    secrets = [(up.home / "redis-password").read_text().strip(),
               (up.home / "flower-auth").read_text().strip().partition(":")[2]]
    assert all(secrets)
    for name, pid in up.pids().items():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert cmdline, name
        assert not [s for s in secrets if s.encode() in cmdline], f"a password is on {name}'s command line"
    logs = [up.home / "fleet.log", up.home / "redis" / "redis.log", *(up.home / "logs").iterdir()]
    for log in logs:
        text = log.read_text(errors="replace")
        assert not [s for s in secrets if s in text], f"a password is in {log}"


def test_a_supervisor_killed_outright_takes_its_fleet_with_it(tmp_path: Path) -> None:
    """Even a SIGKILL, which the supervisor cannot handle: on Linux the kernel ends its children (Redis included),
    so no orphaned fleet holds the ports and the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_") and k != "REDIS_URL"}
    env.update({"FEDGATE_HOME": str(tmp_path / "home"), "FEDGATE_API_PORT": str(free_port()),
                "FEDGATE_EMBEDDED_REDIS_PORT": str(free_port())})
    env["FEDGATE_API_URL"] = f"http://127.0.0.1:{env['FEDGATE_API_PORT']}"
    started = fedgate(env, "up", "--detach", "--no-flower", "--no-simulator")
    fleet = Up(tmp_path / "home", env, started.stdout)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = fleet.pids()
        assert {"api", "redis", "worker-batch", "supervisor"} <= set(pids)
        os.kill(pids.pop("supervisor"), signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in pids.values()), 30, what="every child to end with it")
    finally:
        for pid in (fleet.pids().values() if (fleet.home / "fleet.json").exists() else []):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
