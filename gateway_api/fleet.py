"""`fedgate up`: the whole fleet on one machine, as child processes of one supervisor.

The supervisor restarts a child that exits (a crash, an OOM kill, a `kill -9`) after a backoff that doubles with each
quick failure up to a cap and starts again from the beginning once the child has stayed up a while (`Restarts`); it
stops the fleet only when asked: Ctrl-C, SIGTERM (`fedgate down`) or SIGHUP (its terminal closed). The embedded
Redis gets a generated password (`gateway_core.fleet.credentials`), which the children find in FEDGATE_REDIS_URL.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from gateway_api.cli_http import first_key
from gateway_core.config import load_config
from gateway_core.crypto import load_cipher
from gateway_core.errors import ConfigError
from gateway_core.fleet.credentials import embedded_redis_password, flower_basic_auth
from gateway_core.fleet.embedded_redis import EmbeddedRedis, die_with_parent, port_in_use
from gateway_core.settings import Settings
from gateway_core.webhooks import load_or_create_secret
from workers.celery_app import broker_url

BATCH_WORKER_NICE = 19

FLEET_FILE = "fleet.json"
REDIS = "redis"  # the embedded server's name among the supervised children

# Restart backoff: the first restart after RESTART_DELAY_S, doubling with each failure up to RESTART_DELAY_MAX_S; a
# child that stayed up STABLE_AFTER_S before it exited starts again from RESTART_DELAY_S.
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 30.0
STABLE_AFTER_S = 60.0
POLL_S = 0.2


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
class Restarts:
    """When to restart a child that exited: exponential backoff, capped, reset by a long enough run."""

    base_s: float = RESTART_DELAY_S
    max_s: float = RESTART_DELAY_MAX_S
    stable_after_s: float = STABLE_AFTER_S
    failures: int = 0  # quick exits in a row

    def delay_after(self, ran_for_s: float) -> float:
        """Seconds to wait before restarting a child that exited after running `ran_for_s` seconds."""
        if ran_for_s >= self.stable_after_s:
            self.failures = 0
        delay = min(self.max_s, self.base_s * 2 ** min(self.failures, 32))
        self.failures += 1
        return delay


@dataclass
class Child:
    """One supervised process: how to start it, the current one, and when to restart it if it is gone."""

    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: Restarts = field(default_factory=Restarts)
    restart_at: float | None = None  # monotonic time of the next start, while it is down
    starts: int = 0


@dataclass
class Fleet:
    settings: Settings
    with_simulator: bool = True
    with_flower: bool = True
    redis: EmbeddedRedis | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # the live process of each child
    supervised: dict[str, Child] = field(default_factory=dict)
    redis_child: Child | None = None
    _env: dict[str, str] = field(default_factory=dict)

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
        """The children's environment: FEDGATE_REDIS_URL carries the embedded server's password (an environment is
        readable by the same user only; a command line by everyone)."""
        env = dict(os.environ)
        env["FEDGATE_HOME"] = str(self.settings.home_dir())
        env["FEDGATE_REDIS_URL"] = broker_url(self.settings) if self.redis is None else self.redis.url
        env.setdefault("FEDGATE_SIMULATOR_URL", f"http://127.0.0.1:{self.settings.simulator_port}")
        return env

    def start(self) -> None:
        load_config(self.settings.config, home=self.settings.home_dir())  # fail fast on a bad config
        self.check_ports()
        ensure_dev_secrets(self.settings)
        if self.with_flower:
            flower_basic_auth(self.settings, create=True)  # Flower's login, generated on first start if none is set
        if not self.settings.redis_url:
            self.redis = EmbeddedRedis(self.settings.home_dir() / "redis", self.settings.embedded_redis_port,
                                       password=embedded_redis_password(self.settings, create=True),
                                       supervised=True).start()
            assert self.redis.process is not None
            self.redis_child = Child(REDIS, [], self.redis.process, time.monotonic(), starts=1)
        config = load_config(self.settings.config, home=self.settings.home_dir())
        (self.settings.home_dir() / "logs").mkdir(exist_ok=True)
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
        # Webhook deliveries have a worker of their own: a slow receiver never holds a partner worker's slot.
        commands["worker-webhooks"] = [py, "-m", "gateway_api.cli", "webhook-worker"]
        if self.with_flower:
            commands["flower"] = [py, "-m", "gateway_api.cli", "flower"]
        self._env = self.child_env()
        try:
            for name, cmd in commands.items():
                self.supervised[name] = Child(name, cmd)
                self._spawn(self.supervised[name])
            self._write_fleet_file()
        except BaseException:  # Ctrl-C included: the children have sessions of their own and would outlive us
            self.stop()
            raise

    def _spawn(self, child: Child) -> None:
        log: IO[bytes] = (self.settings.home_dir() / "logs" / f"{child.name}.log").open("ab")
        with log:
            # A session of its own: Ctrl-C or a closed terminal reaches the supervisor, which stops the children in
            # order (a child that got the signal itself would look like a crash and be restarted).
            child.process = subprocess.Popen(child.command, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True,
                                             preexec_fn=functools.partial(die_with_parent, os.getpid()))
        child.started_at, child.restart_at = time.monotonic(), None
        child.starts += 1
        self.children[child.name] = child.process

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        try:
            self._wait_healthy(timeout_s)
        except KeyboardInterrupt:
            self.stop()
            raise

    def _wait_healthy(self, timeout_s: float) -> None:
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
        """fleet.json: the supervisor's pid and each child's current pid and restart count (written whole, by a
        rename, so a reader never sees half of it)."""
        everyone = [*([self.redis_child] if self.redis_child else []), *self.supervised.values()]
        data = {
            "supervisor": os.getpid(),
            "children": {c.name: c.process.pid for c in everyone if c.process is not None and c.name != REDIS},
            "restarts": {c.name: max(0, c.starts - 1) for c in everyone},
        }
        if self.redis_child is not None and self.redis_child.process is not None:
            data["redis"] = self.redis_child.process.pid
        path = self.settings.home_dir() / FLEET_FILE
        temporary = path.with_name(f".{FLEET_FILE}.{os.getpid()}")
        temporary.write_text(json.dumps(data))
        temporary.replace(path)

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
        config on SIGHUP, would otherwise outlive us). A child that exits is restarted after its backoff."""
        stop = {"now": False}

        def request_stop(*_: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGHUP, request_stop)
        while not stop["now"]:
            self.supervise_once(time.monotonic())
            time.sleep(POLL_S)

    def supervise_once(self, now: float) -> None:
        """One round: note each child that exited and schedule its restart; start those whose time has come. Redis
        first: the others need it."""
        everyone = [*([self.redis_child] if self.redis_child else []), *self.supervised.values()]
        changed = False
        for child in everyone:
            process = child.process
            if process is None or child.restart_at is not None or process.poll() is None:
                continue
            delay = child.restarts.delay_after(now - child.started_at)
            child.restart_at = now + delay
            print(f"fedgate: {child.name} (pid {process.pid}) exited with code {process.returncode}; restarting it in "
                  f"{delay:g}s (restart {child.starts})", file=sys.stderr, flush=True)
        for child in everyone:
            if child.restart_at is None or now < child.restart_at:
                continue
            try:
                if child is self.redis_child:
                    self._restart_redis(child)
                else:
                    self._spawn(child)
            except (OSError, ConfigError) as exc:
                child.restart_at = now + child.restarts.delay_after(0.0)
                print(f"fedgate: could not restart {child.name} ({exc}); trying again", file=sys.stderr, flush=True)
                continue
            changed = True
        if changed:
            self._write_fleet_file()

    def _restart_redis(self, child: Child) -> None:
        assert self.redis is not None
        self.redis.start()  # same port, data directory (AOF) and password: every child reconnects to it
        assert self.redis.process is not None
        child.process, child.started_at, child.restart_at = self.redis.process, time.monotonic(), None
        child.starts += 1


def read_fleet_file(home: Path) -> dict[str, object] | None:
    path = home / FLEET_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())  # type: ignore[no-any-return]
