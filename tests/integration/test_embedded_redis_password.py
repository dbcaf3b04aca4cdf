"""The embedded redis-server with a password: a client without it is refused, the URL it hands out works, and the
password is on no command line (redis-server reads it from its standard input)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway_core.fleet.embedded_redis import EmbeddedRedis
from tests.helpers import free_port


def stranger(server: EmbeddedRedis, password: str | None = None) -> redis.Redis:
    """A client of the server's port with this password (or none); refusals are not retried."""
    return redis.Redis(host="127.0.0.1", port=server.port, password=password, retry=Retry(NoBackoff(), 0))


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path / "redis", free_port(), password=secrets.token_hex(32)).start()
    yield embedded
    embedded.stop()


def test_a_client_without_the_password_is_refused(server: EmbeddedRedis) -> None:
    for password in (None, "not-the-password"):
        with stranger(server, password) as client, pytest.raises(redis.exceptions.AuthenticationError):
            client.set("k", "v")
    with redis.Redis.from_url(server.url) as client:
        assert client.set("k", "v") and client.get("k") == b"v"


def test_the_password_is_not_on_the_command_line_nor_in_the_servers_log(server: EmbeddedRedis) -> None:
    assert server.process is not None and server.password
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
    assert cmdline and server.password.encode() not in cmdline
    assert server.password not in (server.data_dir / "redis.log").read_text()
    assert f":{server.password}@" in server.url


def test_a_restart_keeps_the_password_and_the_data(server: EmbeddedRedis) -> None:
    with redis.Redis.from_url(server.url) as client:
        client.set("survives", "yes")
    server.stop()
    server.start()
    with redis.Redis.from_url(server.url) as client:
        assert client.get("survives") == b"yes"
    with stranger(server) as client, pytest.raises(redis.exceptions.AuthenticationError):
        client.get("survives")
