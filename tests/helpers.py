"""Test helpers: free ports, waiting on conditions with deadlines, fleet processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}


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
    """Run `scenario(env)` with a fresh async Redis client (see `with_redis`); the env's `cleanup()` runs
    afterwards."""

    async def work(client: Any) -> Any:
        env = make_env(client)
        try:
            return await scenario(env)
        finally:
            await env.cleanup()

    return with_redis(redis_url, work)
