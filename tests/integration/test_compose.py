"""docker-compose.yml and deploy/ checked by what they run against: the Grafana dashboard's queries against the
series the API's real /metrics exports (scraped in-process with a real Redis), and the `docker compose` client's
and promtool's own checks of the files (scripts/test installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from gateway_core.settings import Settings
from tests.helpers import RedisDatabases
from tests.unit.test_compose import (
    COMPOSE_FILE,
    DEPLOY_CONFIG,
    PROMETHEUS_CONFIG,
    PROMETHEUS_SERIES,
    ROOT,
    TARGET_LABELS,
    USER_ENV,
    dashboard_queries,
    load_dashboard,
    promql_references,
    scrape_jobs,
)


def expected_sample_names(family: str, kind: str) -> list[str]:
    return {
        "counter": [f"{family}_total", f"{family}_created"],
        "histogram": [f"{family}_bucket", f"{family}_sum", f"{family}_count", f"{family}_created"],
        "summary": [family, f"{family}_sum", f"{family}_count", f"{family}_created"],
        "info": [f"{family}_info"],
    }.get(kind, [family])


@pytest.fixture(scope="module")
def exported_metrics(
    redis_databases: RedisDatabases, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, set[str] | None]:
    """Every series name fedgate exports -> its label names (None: the family had no sample to show them).

    The API's real /metrics, scraped in-process with the compose config (plus rate limits, so the bucket gauges
    have rows) against a real Redis (a database of this module's own): the API process's metrics and the fleet
    state read at scrape time. Worker metrics are the same prometheus_client registry (gateway_core.fleet.metrics;
    the worker modules are imported so anything they register is there too), with label names from the metric
    objects themselves."""
    import workers.pipeline
    import workers.tasks
    import workers.webhooks  # noqa: F401  (worker-side registrations)
    from gateway_api.app import create_app

    home = tmp_path_factory.mktemp("compose-metrics")
    config = yaml.safe_load(DEPLOY_CONFIG.read_text())
    for partner in config["partners"].values():
        partner["limits"] = {"requests_per_minute": 600, "tokens_per_minute": 60_000}
    (home / "fedgate.yaml").write_text(yaml.safe_dump(config))
    settings = Settings(home=home, redis_url=redis_databases.url(), config=home / "fedgate.yaml",
                        encryption_keys=USER_ENV["FEDGATE_ENCRYPTION_KEYS"])
    with pytest.MonkeyPatch.context() as patch:
        for name, value in USER_ENV.items():
            patch.setenv(name, value)
        with TestClient(create_app(settings)) as client:
            token = (home / "metrics-token").read_text().strip()  # created by the app: no FEDGATE_METRICS_TOKEN
            response = client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    exported: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(response.text):
        if family.samples:
            for sample in family.samples:
                known = exported.setdefault(sample.name, set())
                assert known is not None
                known.update(sample.labels)
        else:
            for name in expected_sample_names(family.name, family.type):
                exported.setdefault(name, None)
    # Label names of metrics without samples yet, from the metric objects (prometheus_client keeps them private).
    for collector, names in list(REGISTRY._collector_to_names.items()):
        if isinstance(collector, MetricWrapperBase):
            for name in names:
                exported[name] = set(collector._labelnames) | ({"le"} if name.endswith("_bucket") else set())
    assert exported["fedgate_fleet_state_up"] is not None, "the scrape could not read the fleet state"
    return exported


def test_every_dashboard_query_uses_metrics_and_labels_fedgate_exports(
    exported_metrics: dict[str, set[str] | None],
) -> None:
    jobs = scrape_jobs()
    problems = []
    for where, expr in dashboard_queries(load_dashboard()):
        metrics, grouping = promql_references(expr)
        assert metrics, f"{where}: no metric in {expr!r}"
        labels: set[str] = set(TARGET_LABELS)
        unknown_labels = False
        for name, matchers in metrics.items():
            if name in PROMETHEUS_SERIES:
                known: set[str] | None = PROMETHEUS_SERIES[name]
                if "job" in matchers and matchers["job"] not in jobs:
                    problems.append(f"{where}: job {matchers['job']!r} is not a scrape job in deploy/prometheus.yml")
            elif name not in exported_metrics:
                problems.append(f"{where}: {name} is not exported by fedgate ({expr})")
                continue
            else:
                known = exported_metrics[name]
            if known is None:
                unknown_labels = True
            else:
                labels |= known
            for label_name in matchers:
                if known is not None and label_name not in known | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label_name!r} (has {sorted(known)})")
        if not unknown_labels and not grouping <= labels:
            problems.append(f"{where}: groups by {sorted(grouping - labels)}, which no metric in it has ({expr})")
    assert not problems, "\n".join(problems)


# --- the docker compose client's own check, when it is installed ------------------------------------------------


def compose_client() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    client = compose_client()
    assert client is not None, "no compose client: apt-get install docker-compose (scripts/test installs it)"
    env = {**os.environ, **USER_ENV}
    ok = subprocess.run([*client, "-f", str(COMPOSE_FILE), "config", "-q"], env=env, capture_output=True,
                        text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    env.pop("REDIS_PASSWORD")
    missing = subprocess.run([*client, "-f", str(COMPOSE_FILE), "config", "-q"], env=env, capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
    assert missing.returncode != 0 and "REDIS_PASSWORD" in missing.stderr


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus (scripts/test installs it)"
    # --syntax-only: the API's bearer token file (authorization.credentials_file) exists only where Prometheus runs
    checked = subprocess.run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
