"""`fedgate batch submit --wait` shows progress and writes the output and error files; status and results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, FleetEnv, Proc


def fedgate(fleet: FleetEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_api.cli", *args], env=fleet.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def test_submit_wait_writes_output_and_errors(fleet: FleetEnv, worker: Proc, tmp_path: Path) -> None:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "sim-openai", "messages": [{"role": "user", "content": f"item {i}"}]}}
             for i in range(8)]
    lines.append({"custom_id": "bad-model", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = fedgate(fleet, "batch", "submit", str(source), "--wait", "--out-dir", str(tmp_path / "out"),
                   "--poll-s", "0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed: 8 succeeded, 1 failed" in done.stdout
    batch_id = done.stdout.split("batch ", 1)[1].split(" ", 1)[0]
    output = [json.loads(x) for x in (tmp_path / "out" / f"{batch_id}.output.jsonl").read_text().splitlines()]
    assert sorted(o["custom_id"] for o in output) == [f"r{i}" for i in range(8)]
    first = next(o for o in output if o["custom_id"] == "r0")
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "Simulated reply from sim-openai: item 0"
    errors = (tmp_path / "out" / f"{batch_id}.errors.jsonl").read_text()
    assert "bad-model" in errors

    status = json.loads(fedgate(fleet, "batch", "status", batch_id).stdout)
    assert status["status"] == "completed" and status["request_counts"]["total"] == 9
    again = fedgate(fleet, "batch", "results", batch_id, "--out-dir", str(tmp_path / "again"))
    assert again.returncode == 0 and (tmp_path / "again" / f"{batch_id}.output.jsonl").exists()


def test_a_bad_line_is_reported_by_number(fleet: FleetEnv, tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n{not json\n')
    result = fedgate(fleet, "batch", "submit", str(source), "--wait", "--poll-s", "0.2")
    assert result.returncode != 0
    assert "line 2" in result.stderr
