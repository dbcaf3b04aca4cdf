"""The partner simulator as its own process on loopback, for tests that need a real HTTP server."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from partner_simulator import SimulatorConfig
from tests.helpers import ROOT, free_port, http_ok, wait_for

START_DEADLINE_S = 20.0


@contextmanager
def running_simulator(config: SimulatorConfig) -> Iterator[str]:
    """Serve `config` with the simulator's own `serve()` (uvicorn); yields the base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fedgate-sim-") as home:
        config_file = Path(home) / "simulator.json"
        config_file.write_text(config.model_dump_json())
        script = (
            "from pathlib import Path; from partner_simulator import SimulatorConfig, serve; "
            f"serve('127.0.0.1', {port}, SimulatorConfig.model_validate_json(Path({str(config_file)!r}).read_text()))"
        )
        process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
        base_url = f"http://127.0.0.1:{port}"

        def healthy_or_exited() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"simulator exited early with code {process.returncode}")
            return http_ok(f"{base_url}/healthz")

        try:
            wait_for(healthy_or_exited, START_DEADLINE_S, what="the simulator to answer /healthz")
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=10)
