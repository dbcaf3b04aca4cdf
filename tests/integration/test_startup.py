"""The `fedgate` CLI starts without loading what only some commands use.

`fedgate --help`, `fedgate status` and the other commands that talk to the API would otherwise pay for presidio and
spaCy (redaction), Celery (workers), FastAPI (the API server) and the OpenTelemetry SDK on every call: over a second
before this was held. Each check runs a fresh interpreter with `-X importtime` and reads which modules it imported;
how long they took is measured for the README, not asserted here.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("presidio_analyzer", "presidio_anonymizer", "spacy", "celery", "kombu", "fastapi", "uvicorn",
         "opentelemetry.sdk", "httpx")
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")


Run = tuple[set[str], subprocess.CompletedProcess[str]]


def imported_modules(*args: str, env: dict[str, str] | None = None) -> Run:
    """The modules a fresh `python -X importtime <args>` imported, and how it ended."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})
    modules = {found.group(1) for line in done.stderr.splitlines() if (found := _IMPORTED.match(line))}
    assert modules, f"no -X importtime output: {done.stderr[-2000:]}"
    return modules, done


def loaded(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cli_import() -> Run:
    return imported_modules("-c", "import gateway_api.cli")


@pytest.fixture(scope="module")
def status_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return imported_modules("-m", "gateway_api.cli", "status", env={
        "FEDGATE_HOME": str(tmp_path_factory.mktemp("home")), "FEDGATE_API_KEY": "not-used",
        "FEDGATE_API_URL": f"http://127.0.0.1:{closed_port()}"})


@pytest.mark.parametrize("package", HEAVY)
def test_importing_the_cli_loads_no_heavy_package(cli_import: Run, package: str) -> None:
    modules, done = cli_import
    assert done.returncode == 0, done.stderr[-2000:]
    assert not loaded(modules, package), f"`import gateway_api.cli` loads {package}; import it inside the command"


def test_help_lists_every_command_without_loading_the_domain(tmp_path: Path) -> None:
    modules, done = imported_modules("-m", "gateway_api.cli", "--help", env={"FEDGATE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    for command in ("submit", "status", "usage", "worker", "api", "dlq", "batch", "contracts", "redact"):
        assert command in done.stdout
    assert not loaded(modules, "gateway_core"), "`fedgate --help` loads gateway_core"
    assert not [m for package in HEAVY for m in loaded(modules, package)]


@pytest.mark.parametrize("package", ["presidio_analyzer", "spacy", "celery", "fastapi", "uvicorn"])
def test_status_loads_neither_redaction_nor_workers_nor_the_server(status_run: Run, package: str) -> None:
    """`fedgate status` parses the API's answer into the domain's FleetState: that, not the redaction engine."""
    modules, done = status_run
    assert done.returncode == 1 and "cannot reach the API" in done.stderr, done.stderr[-2000:]
    assert "gateway_core.fleet.fleet_state" in modules
    assert not loaded(modules, package), f"`fedgate status` loads {package}"


def test_usage_help_names_every_dimension_the_api_accepts() -> None:
    """cli_usage spells the dimensions out so its help needs no domain import; they must stay the same."""
    from gateway_api.cli_usage import DIMENSIONS_HELP
    from gateway_core.tenants.metering import DIMENSIONS

    assert ", ".join(DIMENSIONS) == DIMENSIONS_HELP
