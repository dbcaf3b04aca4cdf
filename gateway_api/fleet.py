"""`fedgate up`: the whole fleet on one machine, as child processes of one supervisor."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway_api.cli_http import first_key
from gateway_core.config import load_config
from gateway_core.crypto import load_cipher
from gateway_core.errors import ConfigError
from gateway_core.fleet.embedded_redis import EmbeddedRedis, port_in_use
from gateway_core.settings import Settings
from gateway_core.webhooks import load_or_create_secret
from workers.celery_app import broker_url

BATCH_WORKER_NICE = 19

FLEET_FILE = "fleet.json"


def ensure_dev_secrets(settings: Settings) -> str:
    """The development tenant's API key and webhook secret, created on first start."""
    home = settings.home_dir()
    key_file = home / "dev-api-key"
    if not key_file.exists():
        key_file.write_text("fg-dev-" + secrets.token_urlsafe(24) + "\n")
        key_file.chmod(0o600)
    load_or_create_secret(home / "dev-webhook-secret")
    load_cipher(settings)  # creates secret.key before any child races to
    return first_key(key_file)


@dataclass
class Fleet:
    settings: Settings
    with_simulator: bool = True
    with_flower: bool = True
    redis: EmbeddedRedis | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.flower_port}"

    def check_ports(self) -> None:
        wanted = {"API": self.settings.api_port}
        if self.with_flower:
            wanted["Flower"] = self.settings.flower_port
        if self.with_simulator:
            wanted["partner simulator"] = self.settings.simulator_port
        for what, port in wanted.items():
            if port_in_use("127.0.0.1", port):
                raise ConfigError(f"port {port} ({what}) is in use: stop what holds it or set another port in settings")

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FEDGATE_HOME"] = str(self.settings.home_dir())
        env["FEDGATE_REDIS_URL"] = broker_url(self.settings) if self.redis is None else self.redis.url
        env.setdefault("FEDGATE_SIMULATOR_URL", f"http://127.0.0.1:{self.settings.simulator_port}")
        return env

    def start(self) -> None:
        load_config(self.settings.config, home=self.settings.home_dir())  # fail fast on a bad config
        self.check_ports()
        ensure_dev_secrets(self.settings)
        if not self.settings.redis_url:
            self.redis = EmbeddedRedis(self.settings.home_dir() / "redis", self.settings.embedded_redis_port).start()
        config = load_config(self.settings.config, home=self.settings.home_dir())
        logs = self.settings.home_dir() / "logs"
        logs.mkdir(exist_ok=True)
        py = sys.executable
        commands: dict[str, list[str]] = {}
        if self.with_simulator:
            commands["simulator"] = [py, "-m", "gateway_api.cli", "simulate"]
        commands["api"] = [py, "-m", "gateway_api.cli", "api"]
        for partner in config.partners:
            commands[f"worker-{partner}"] = [py, "-m", "gateway_api.cli", "worker", "--partners", partner,
                                             "--lanes", "interactive"]
        # One worker takes every partner's batch lane, at a lower CPU priority, so a draining batch leaves the
        # interactive workers their CPU; it also takes interactive jobs when it is idle and they are waiting.
        commands["worker-batch"] = [py, "-m", "gateway_api.cli", "worker", "--partners", ",".join(config.partners),
                                    "--lanes", "batch", "--nice", str(BATCH_WORKER_NICE), "--idle-cpu"]
        if self.with_flower:
            commands["flower"] = [py, "-m", "gateway_api.cli", "flower"]
        env = self.child_env()
        for name, cmd in commands.items():
            out = (logs / f"{name}.log").open("ab")
            self.children[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self._write_fleet_file()

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        checks = {"api": f"{self.api_url}/healthz"}
        if self.with_simulator:
            checks["simulator"] = f"http://127.0.0.1:{self.settings.simulator_port}/healthz"
        pending = dict(checks)
        while pending:
            for name, url in list(pending.items()):
                proc = self.children[name]
                if proc.poll() is not None:
                    raise ConfigError(f"{name} exited at start; see {self.settings.home_dir() / 'logs' / name}.log")
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise ConfigError(f"{', '.join(pending)} did not become healthy within {timeout_s:.0f}s")
            time.sleep(0.1)

    def _write_fleet_file(self) -> None:
        data = {"supervisor": os.getpid(), "children": {n: p.pid for n, p in self.children.items()}}
        (self.settings.home_dir() / FLEET_FILE).write_text(json.dumps(data))

    def stop(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.children.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.redis:
            self.redis.stop()
        (self.settings.home_dir() / FLEET_FILE).unlink(missing_ok=True)

    def watch(self) -> None:
        """Stay in the foreground until Ctrl-C, SIGTERM or a hang-up (the terminal closed: the API, which reloads its
        config on SIGHUP, would otherwise outlive us); a child that dies stops the fleet."""
        stop = {"now": False}

        def request_stop(*_: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGHUP, request_stop)
        while not stop["now"]:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    print(f"fedgate: {name} exited with code {proc.returncode}; stopping the fleet", file=sys.stderr)
                    stop["now"] = True
                    break
            time.sleep(0.2)


def read_fleet_file(home: Path) -> dict[str, object] | None:
    path = home / FLEET_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())  # type: ignore[no-any-return]
