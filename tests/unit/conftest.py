"""Keeps tests/unit what it says it is: no Redis server, no subprocesses, no network beyond loopback servers the
test itself starts (in-process HTTP servers are fine). A test that needs more belongs in tests/integration.

Enforced per test: asking for a Redis or fleet fixture (directly or through another fixture) fails the test before
it runs, and so does starting a process, looking up a name or connecting to an address that is not loopback."""

from __future__ import annotations

import ipaddress
import platform
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

# The fixtures in tests/conftest.py that start or reach the session's Redis server or its fleet processes
# (`api`, `sim`, `worker` and `fleet_redis` all depend on `fleet`, so asking for them asks for it too).
INTEGRATION_FIXTURES = ("redis_server", "redis_databases", "redis_url", "redis_client", "fleet")

# The standard library's one process start a library may make in passing (the openai SDK's platform headers): made
# once here, where it is cached, so that no test makes it.
platform.uname().processor  # noqa: B018


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up: no Redis is started for a test that may not have it
def pytest_runtest_setup(item: pytest.Item) -> None:
    asked = [name for name in INTEGRATION_FIXTURES if name in getattr(item, "fixturenames", ())]
    if asked:
        pytest.fail(f"{item.nodeid} is a unit test but needs {', '.join(asked)} (a real Redis or the fleet's "
                    "processes): move it to tests/integration", pytrace=False)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True)
def unit_test_boundaries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail the test on any process start, name look-up or connection off the machine, even if the code swallows
    the error. Yields what was refused (tests/unit/test_unit_boundaries.py reads it)."""
    refused: list[str] = []

    def refuse(what: str) -> None:
        refused.append(what)
        pytest.fail(f"a unit test may not {what}: move the test to tests/integration", pytrace=False)

    def no_process(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        refuse(f"start a process ({args[0] if args else kwargs.get('args')!r})")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        inet = sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple)
        if inet and not _loopback(str(address[0])):
            refuse(f"connect to {address[0]}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _loopback(str(name)) and not _address(str(name)):
            refuse(f"look up {name!r}")  # an address needs no look-up; a connection to it is checked below
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield refused
    assert not refused, f"the code under test swallowed the refusal to {refused[0]}"
