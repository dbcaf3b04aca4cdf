"""Metering and budgets against the running fleet: cost on the job, usage by API and `fedgate usage`, and a tenant
over its hard budget refused with 402 on every front door with nothing created.

Tenants `metered` and `budgeted` (tests/fleet_config.yaml) are used only here; their usage keys are removed first."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.helpers import ROOT, FleetEnv, Proc, wait_for

PRICES = {"sim-openai": (Decimal("2.5"), Decimal("10")), "sim-anthropic": (Decimal("3"), Decimal("15"))}
TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}


@pytest.fixture()
def store(fleet: FleetEnv) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(fleet.env["FEDGATE_REDIS_URL"], decode_responses=True)
    for tenant in ("metered", "budgeted"):
        stale = list(client.scan_iter(f"fg:usage:{tenant}:*"))
        if stale:
            client.delete(*stale)
    yield client
    client.close()


def tenant_client(fleet: FleetEnv, key: str) -> httpx.Client:
    return httpx.Client(base_url=fleet.env["FEDGATE_API_URL"], headers={"authorization": f"Bearer {key}"},
                        timeout=60)


def fedgate(fleet: FleetEnv, *args: str, key: str = "test-key-dev") -> subprocess.CompletedProcess[str]:
    env = {**fleet.env, "FEDGATE_API_KEY": key, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "gateway_api.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def run_job(client: httpx.Client, partner: str, prompt: str) -> dict[str, Any]:
    accepted = client.post("/v1/jobs", json={"partner": partner, "prompt": prompt})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    return wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json())["status"] in TERMINAL
                    and j, 60, what=f"job {job_id} to finish")


def expected_cost(partner: str, usage: dict[str, int]) -> float:
    per_input, per_output = PRICES[partner]
    return float((per_input * usage["prompt_tokens"] + per_output * usage["completion_tokens"]) / 1_000_000)


def test_cost_on_the_job_and_usage_by_api_and_cli(fleet: FleetEnv, worker: Proc, store: redis.Redis) -> None:
    with tenant_client(fleet, "test-key-metered") as metered:
        jobs = [run_job(metered, "sim-openai", "first job"), run_job(metered, "sim-openai", "a second, longer job"),
                run_job(metered, "sim-anthropic", "third")]
        for job in jobs:
            assert job["status"] == "succeeded", job
            assert job["usage"]["prompt_tokens"] > 0 and job["usage"]["completion_tokens"] > 0
            assert job["cost_usd"] == pytest.approx(expected_cost(job["partner"], job["usage"]), rel=1e-9)

        report = wait_for(lambda: (r := metered.get("/v1/usage").json())["total"]["jobs"] == 3 and r, 30,
                          what="usage counters to be written")
        rows = {row["partner"]: row for row in report["rows"]}
        assert report["tenant"] == "metered" and report["by"] == ["partner"] and report["budgets"] == []
        openai_jobs = [j for j in jobs if j["partner"] == "sim-openai"]
        assert rows["sim-openai"]["jobs"] == 2 and rows["sim-openai"]["calls"] == 2
        assert rows["sim-openai"]["prompt_tokens"] == sum(j["usage"]["prompt_tokens"] for j in openai_jobs)
        assert rows["sim-openai"]["completion_tokens"] == sum(j["usage"]["completion_tokens"] for j in openai_jobs)
        assert rows["sim-openai"]["cost_usd"] == pytest.approx(sum(j["cost_usd"] for j in openai_jobs), rel=1e-9)
        assert rows["sim-anthropic"]["jobs"] == 1
        assert report["total"]["cost_usd"] == pytest.approx(sum(j["cost_usd"] for j in jobs), rel=1e-9)

        assert metered.get("/v1/admin/usage", params={"tenant": "metered"}).status_code == 403
        bad = metered.get("/v1/usage", params={"by": "partner,colour"})
        assert bad.status_code == 422 and "cannot group by 'colour'" in bad.json()["error"]["message"]

    table = fedgate(fleet, "usage", "--tenant", "metered", "--by", "partner,day")
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    openai_line = next(line for line in lines if "sim-openai" in line)
    assert report["last_day"] in openai_line
    assert f"{rows['sim-openai']['prompt_tokens']:,}" in openai_line
    assert any("sim-anthropic" in line for line in lines)
    total_line = next(line for line in lines if "Total" in line)
    assert " 3 " in total_line and f"{report['total']['completion_tokens']:,}" in total_line

    as_json = json.loads(fedgate(fleet, "usage", "--tenant", "metered", "--by", "month", "--json").stdout)
    assert [r["month"] for r in as_json["rows"]] == [report["last_day"][:7]]
    assert as_json["total"]["cost_usd"] == pytest.approx(report["total"]["cost_usd"])

    own = fedgate(fleet, "usage", "--by", "partner", key="test-key-metered")
    assert own.returncode == 0 and "Usage of metered" in own.stdout
    refused = fedgate(fleet, "usage", "--tenant", "nobody")
    assert refused.returncode == 1 and "no tenant 'nobody' in the config" in refused.stderr


def budgeted_snapshot(store: redis.Redis) -> tuple[int, int, int]:
    jobs = sum(1 for key in store.scan_iter("fg:job:*", count=1000)
               if ":" not in key[len("fg:job:"):] and store.hget(key, "tenant") == "budgeted")
    return jobs, store.llen("partner.sim-openai"), store.zcard("fg:batches:budgeted")


def test_a_tenant_over_its_hard_budget_gets_402_everywhere_and_nothing_is_created(
    fleet: FleetEnv, worker: Proc, store: redis.Redis
) -> None:
    with tenant_client(fleet, "test-key-budgeted") as budgeted:
        first = run_job(budgeted, "sim-openai", "hello")  # under budget: accepted; it spends past the $0.00005 cap
        assert first["status"] == "succeeded" and first["cost_usd"] > 0.00005
        wait_for(lambda: budgeted.get("/v1/usage").json()["budgets"][0]["state"] == "exceeded", 30,
                 what="the spend to be written")
        before = budgeted_snapshot(store)

        refused = budgeted.post("/v1/jobs", json={"partner": "sim-openai", "prompt": "one more"})
        assert refused.status_code == 402, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
        message = error["message"]
        assert message.startswith("tenant 'budgeted' has spent $0.000")
        assert "of its daily budget $0.00005; resets at 00:00 UTC (in " in message
        assert "raise budgets.daily_usd in the config or wait" in message

        sdk = openai.OpenAI(base_url=fleet.env["FEDGATE_API_URL"] + "/v1", api_key="test-key-budgeted",
                            max_retries=0)
        with pytest.raises(openai.APIStatusError, match="daily budget") as caught:
            sdk.chat.completions.create(model="sim-openai", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 402
        line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                           "body": {"model": "sim-openai", "messages": [{"role": "user", "content": "hi"}]}})
        input_file = sdk.files.create(file=("in.jsonl", io.BytesIO(line.encode() + b"\n")), purpose="batch")
        with pytest.raises(openai.APIStatusError, match="daily budget") as caught:
            sdk.batches.create(input_file_id=input_file.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert caught.value.status_code == 402
        assert sdk.batches.list().data == []

        cli = fedgate(fleet, "submit", "--partner", "sim-openai", "--prompt", "from the cli", key="test-key-budgeted")
        assert cli.returncode == 1 and "daily budget $0.00005" in cli.stderr

        assert budgeted_snapshot(store) == before

        usage = budgeted.get("/v1/usage").json()
        daily = usage["budgets"][0]
        assert (daily["period"], daily["state"], daily["budget_usd"]) == ("daily", "exceeded", 0.00005)
        assert daily["spent_usd"] == pytest.approx(first["cost_usd"])
        assert usage["budgets"][1]["period"] == "monthly" and usage["budgets"][1]["state"] == "ok"

    token = (Path(fleet.env["FEDGATE_HOME"]) / "metrics-token").read_text().strip()

    def scraped() -> str | None:  # scrapes share one Redis read per FEDGATE_METRICS_CACHE_S: wait for a fresh one
        text = httpx.get(fleet.env["FEDGATE_API_URL"] + "/metrics", headers={"authorization": f"Bearer {token}"},
                         timeout=10).text
        return text if 'fedgate_tenant_budget_exhausted{period="daily",tenant="budgeted"} 1.0' in text else None

    scrape = wait_for(scraped, 10, what="the scrape to show the exhausted daily budget")
    assert 'fedgate_tenant_budget_exhausted{period="monthly",tenant="budgeted"} 0.0' in scrape
