"""An API process of a test module's own: its own port, FEDGATE_HOME and Redis database, with settings the shared
fleet's API does not have (small limits and quotas, a fixed metrics token), so what it stores touches nobody."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway_core.webhooks import load_or_create_secret
from tests.helpers import FleetEnv, Proc, free_port, http_ok, wait_for

KEY = "test-key-dev"  # the dev tenant's key (tests/fleet_config.yaml reads it from $FEDGATE_HOME/dev-api-key)


@dataclass
class OwnApi:
    proc: Proc
    url: str
    home: Path
    env: dict[str, str]

    def client(self, key: str | None = KEY) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def own_api(fleet: FleetEnv, home: Path, redis_url: str, **settings: str) -> Iterator[OwnApi]:
    """Start `fedgate api` with the shared fleet's environment but its own port, home and Redis database, plus
    `settings` (FEDGATE_* names to values); stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dev-api-key").write_text(KEY + "\n")
    load_or_create_secret(home / "dev-webhook-secret")
    port = free_port()
    env = {**fleet.env, "FEDGATE_HOME": str(home), "FEDGATE_REDIS_URL": redis_url, "FEDGATE_API_PORT": str(port),
           "FEDGATE_API_URL": f"http://127.0.0.1:{port}", **settings}
    procs = FleetEnv(home, env)
    proc = procs.spawn("own-api", "api")
    try:
        wait_for(lambda: http_ok(f"{env['FEDGATE_API_URL']}/healthz") or proc.process.poll() is not None, 30,
                 what="the module's own API")
        assert proc.process.poll() is None, proc.output()[-3000:]
        yield OwnApi(proc, env["FEDGATE_API_URL"], home, env)
    finally:
        procs.stop_all()
