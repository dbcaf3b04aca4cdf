"""The optional extras are optional: without the OpenTelemetry SDK (the `otel` extra), tracing switched off works,
and a process asked to export traces refuses to start saying what to install. Each check runs a fresh interpreter
in which the SDK cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_WITHOUT_OTEL_SDK = """
import sys
for name in ("opentelemetry.sdk", "opentelemetry.exporter"):
    sys.modules[name] = None  # as if the otel extra were not installed: importing them raises ImportError
"""


def _run_without_otel_sdk(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_OTEL_SDK + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


def test_tracing_off_needs_no_otel_sdk(tmp_path: Path) -> None:
    done = _run_without_otel_sdk("""
from gateway_core.fleet import tracing
assert tracing.configure_tracing("api") is False
with tracing.span("stage") as current:
    assert not current.is_recording()
assert tracing.traced("stage")(lambda x: x + 1)(1) == 2
assert tracing.current_traceparent() is None and tracing.missing_exporter_packages(tracing.get_settings()) is None
print("ok")
""", {"FEDGATE_HOME": str(tmp_path), "FEDGATE_OTEL_EXPORTER": "none"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("command", [["api"], ["worker", "--partners", "sim-openai"]])
def test_processes_asked_to_export_traces_without_the_otel_extra_refuse_to_start(tmp_path: Path,
                                                                                 command: list[str]) -> None:
    done = _run_without_otel_sdk(f"""
sys.argv = ["fedgate", *{command!r}]
from gateway_api.cli import main
main()
""", {"FEDGATE_HOME": str(tmp_path), "FEDGATE_OTEL_EXPORTER": "otlp"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install 'fedgate[otel]'" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
