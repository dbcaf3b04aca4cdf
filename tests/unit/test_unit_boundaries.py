"""tests/unit/conftest.py keeps unit tests unit tests: asking for Redis or the fleet, starting a process, looking up
a name or connecting off the machine fails the test, even when the code under test swallows the error."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from types import SimpleNamespace

import httpx
import pytest

from tests.unit import conftest as unit


@pytest.mark.parametrize("fixture", ["redis_server", "redis_url", "redis_client", "fleet"])
def test_a_unit_test_asking_for_redis_or_the_fleet_fails_before_it_runs(fixture: str) -> None:
    item = SimpleNamespace(nodeid="tests/unit/test_x.py::test_y", fixturenames=["request", fixture, "tmp_path"])
    with pytest.raises(pytest.fail.Exception, match=rf"test_y is a unit test but needs {fixture} .*tests/integration"):
        unit.pytest_runtest_setup(item)  # type: ignore[arg-type]
    unit.pytest_runtest_setup(SimpleNamespace(nodeid="t", fixturenames=["tmp_path", "monkeypatch"]))  # type: ignore[arg-type]


def test_starting_a_process_fails(unit_test_boundaries: list[str]) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"may not start a process \(\['true'\]\)"):
        subprocess.run(["true"], check=False)
    assert unit_test_boundaries == ["start a process (['true'])"]
    unit_test_boundaries.clear()  # refused as it should be: not a failure of this test


def test_a_name_look_up_or_a_connection_off_the_machine_fails_even_if_swallowed(
    unit_test_boundaries: list[str],
) -> None:
    with contextlib.suppress(BaseException):  # code under test that swallows everything cannot hide it either
        httpx.get("http://partner.example/v1", timeout=1)
    with pytest.raises(pytest.fail.Exception, match=r"may not connect to 192\.0\.2\.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    assert unit_test_boundaries == ["look up 'partner.example'", "connect to 192.0.2.1"]
    unit_test_boundaries.clear()


def test_loopback_servers_the_test_starts_are_fine() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("localhost", port), timeout=1):
            pass
