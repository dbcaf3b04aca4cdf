"""Test helpers: Redis databases of a test's own, free ports, waiting on conditions with deadlines, fleet processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import redis

if TYPE_CHECKING:
    from gateway_core.fleet.embedded_redis import EmbeddedRedis

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG = Path(__file__).with_name("fleet_config.yaml")
TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}


class RedisDatabases:
    """Hands out the session server's logical databases, each to one test or module and never twice.

    Database 0 (`EmbeddedRedis.url`) is handed to nobody, so a test that reaches for it sees an empty store."""

    def __init__(self, server: EmbeddedRedis) -> None:
        self.server = server
        self.next = 1

    def url(self) -> str:
        if self.next >= self.server.databases:
            raise RuntimeError(f"all {self.server.databases} Redis databases are in use: raise REDIS_DATABASES "
                               "in tests/conftest.py")
        db, self.next = self.next, self.next + 1
        url = f"redis://127.0.0.1:{self.server.port}/{db}"
        with redis.Redis.from_url(url) as client:
            assert client.dbsize() == 0, f"Redis database {db} was handed out fresh but holds keys"
        return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll until condition() is truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = 15, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class FleetEnv:
    """Environment and processes for one fleet under test."""

    home: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, *args: str) -> Proc:
        log = self.home / f"{name}-{len(self.procs)}.log"
        out = log.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway_api.cli", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        proc = Proc(name, process, log)
        self.procs.append(proc)
        return proc

    def start_worker(self, partners: str, concurrency: int = 200, lanes: str = "interactive,batch") -> Proc:
        proc = self.spawn(f"worker-{partners}", "worker", "--partners", partners, "--concurrency", str(concurrency),
                          "--lanes", lanes)
        wait_for(lambda: "ready." in proc.output() or proc.process.poll() is not None, 60, what="worker ready")
        assert proc.process.poll() is None, proc.output()[-3000:]
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def start_fleet(home: Path, redis_url: str) -> FleetEnv:
    """The partner simulator (the demo partners, recording what they receive, for leak tests) and the API as
    processes, on `redis_url`, with the test config and a development tenant; workers are started by the tests."""
    from gateway_core.webhooks import load_or_create_secret
    from partner_simulator import SimulatorConfig

    sim_port, api_port = free_port(), free_port()
    (home / "dev-api-key").write_text("test-key-dev\n")
    load_or_create_secret(home / "dev-webhook-secret")
    sim_config = home / "simulator.json"
    sim_config.write_text(SimulatorConfig.demo().model_copy(update={"record_bodies": True}).model_dump_json())
    env = dict(os.environ)
    env.update(
        {
            "FEDGATE_HOME": str(home),
            "FEDGATE_REDIS_URL": redis_url,
            "FEDGATE_CONFIG": str(TEST_CONFIG),
            "FEDGATE_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}",
            "FEDGATE_SIMULATOR_PORT": str(sim_port),
            "FEDGATE_API_PORT": str(api_port),
            "FEDGATE_API_URL": f"http://127.0.0.1:{api_port}",
            "FEDGATE_API_KEY": "test-key-dev",
            "FEDGATE_VISIBILITY_TIMEOUT_S": "10",
            "FEDGATE_MAX_PROMPT_CHARS": "5000",
            "FEDGATE_SIM_CONFIG": str(sim_config),
            "FEDGATE_FLOWER_PORT": str(free_port()),
            "FEDGATE_FLOWER_BASIC_AUTH": "operator:test-flower-password",
        }
    )
    fleet_env = FleetEnv(home, env)
    fleet_env.spawn("simulator", "simulate")
    fleet_env.spawn("api", "api")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{sim_port}/healthz"), 30, what="simulator")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{api_port}/healthz"), 30, what="api")
    return fleet_env


def calls_with(sim: httpx.Client, partner: str, text: str) -> int:
    """How many requests the simulated `partner` received with `text` in their body (the test simulator records
    bodies): the calls a test's own jobs made, whatever else a shared simulator serves meanwhile."""
    bodies: list[str] = sim.get(f"/_sim/requests/{partner}").json()["bodies"]
    return sum(text in body for body in bodies)


def submit_job(api: httpx.Client, partner: str, prompt: str) -> str:
    response = api.post("/v1/jobs", json={"partner": partner, "prompt": prompt})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def finish_job(api: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job as the API shows it once finished (long-polls)."""

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
        return job if job["status"] in TERMINAL else None

    found = wait_for(finished, timeout=timeout, what=f"job {job_id} to finish")
    assert found is not None
    return found


def with_redis(redis_url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `await work(client)` on a fresh loop with a fresh async Redis client (clients may not cross loops)."""
    import asyncio

    import redis.asyncio as aioredis

    async def main() -> T:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def run_async_scenario(redis_url: str, make_env: Callable[[Any], Any], scenario: Callable[[Any], Any]) -> Any:
    """Run `scenario(make_env(client))` with a fresh async Redis client (see `with_redis`). Nothing is cleaned up
    afterwards: `redis_url` is the test's own database."""

    async def work(client: Any) -> Any:
        return await scenario(make_env(client))

    return with_redis(redis_url, work)
