"""docker-compose.yml, the Dockerfile and deploy/: checked without a Docker engine.

The compose file is for users (no engine runs in CI), so these tests check what `docker compose up` would trip
over: commands the CLI does not have, files that are not in the repo, a worker missing for a partner, a config
that does not load. tests/integration/test_compose.py checks the Grafana queries against what the API really
exports (scraped with a real Redis) and runs the `docker compose` client's and promtool's own checks."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

from gateway_api.cli import cli
from gateway_core.config import GatewayConfig, load_config
from gateway_core.errors import ConfigError
from gateway_core.settings import Settings, reset_settings_cache

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_CONFIG = ROOT / "deploy" / "fedgate.yaml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
GRAFANA_DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "fedgate.yml"
GRAFANA_DASHBOARD = GRAFANA_DIR / "dashboards" / "fedgate.json"
# What the compose file requires from its user (all `${VAR:?...}`), with harmless values for the checks.
USER_ENV = {
    "REDIS_PASSWORD": "0123456789abcdef0123456789abcdef",
    "FEDGATE_ENCRYPTION_KEYS": "x3Ht4VBr1rV2F4g9C8hx0u3tm3Uy3qW8d1GmY8c0Kf0=",
    "FEDGATE_DEV_API_KEY": "deadbeefdeadbeefdeadbeefdeadbeef",
    "FEDGATE_FLOWER_BASIC_AUTH": "admin:0123456789ab",
    "GRAFANA_ADMIN_PASSWORD": "0123456789abcdef",
    "FEDGATE_METRICS_TOKEN": "0123456789abcdef0123456789abcdef",
}
DEFAULTS = Settings.model_construct()  # field defaults, whatever FEDGATE_* the test runner has set
COMMANDS: dict[str, click.Command] = typer.main.get_command(cli).commands  # type: ignore[attr-defined]


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def dockerfile_entrypoint() -> list[str]:
    found = re.findall(r"^ENTRYPOINT\s+(.+)$", DOCKERFILE.read_text(), flags=re.M)
    assert found, "Dockerfile has no ENTRYPOINT"
    return list(json.loads(found[-1]))


def fedgate_image() -> str | None:
    """The image name the compose file gives the image it builds from this repo."""
    names = {s.get("image") for s in SERVICES.values() if "build" in s}
    assert len(names) == 1, f"services that build this repo should share one image name, got {names}"
    return names.pop()


def builds_this_repo(service: dict[str, Any]) -> bool:
    return "build" in service or (service.get("image") is not None and service.get("image") == fedgate_image())


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def effective_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: its entrypoint (the service's, else this repo's Dockerfile's) plus command."""
    entrypoint = as_argv(service.get("entrypoint"))
    if not entrypoint and builds_this_repo(service):
        entrypoint = dockerfile_entrypoint()
    return entrypoint + as_argv(service.get("command"))


def fedgate_services() -> dict[str, list[str]]:
    """Services that run `fedgate <subcommand> ...`, with the arguments after `fedgate`."""
    found = {}
    for name, service in SERVICES.items():
        argv = effective_argv(service)
        if argv and Path(argv[0]).name == "fedgate":
            found[name] = argv[1:]
    return found


def parse_cli(args: list[str]) -> click.Context:
    """Parse `fedgate <args>` with the real CLI's parser (no command runs)."""
    assert args, "a fedgate service must name a subcommand"
    command = COMMANDS.get(args[0])
    assert command is not None, f"`fedgate {args[0]}` is not a CLI command (have: {sorted(COMMANDS)})"
    return command.make_context(args[0], list(args[1:]))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool, str]]:
    """(source, target, read_only, type) for each volume of a service, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else "rw"
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            mounts.append((source, target, "ro" in mode.split(","), kind))
        else:
            mounts.append((volume.get("source", ""), volume["target"], bool(volume.get("read_only")),
                           volume.get("type", "volume")))
    return mounts


@pytest.fixture()
def deploy_config(monkeypatch: pytest.MonkeyPatch) -> GatewayConfig:
    for name, value in USER_ENV.items():
        monkeypatch.setenv(name, value)
    return load_config(DEPLOY_CONFIG)


# --- every service can start -------------------------------------------------------------------------------------


def test_every_service_has_an_image_or_a_build() -> None:
    assert SERVICES, "docker-compose.yml defines no services"
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), f"service {name!r} has neither image nor build"


def test_the_expected_services_are_there() -> None:
    assert {"redis", "api", "simulator", "flower", "prometheus", "grafana"} <= set(SERVICES)


def test_every_fedgate_command_exists_in_the_cli_and_parses() -> None:
    used = fedgate_services()
    assert {"api", "flower", "simulator"} <= set(used), f"fedgate services found: {sorted(used)}"
    for name, args in used.items():
        assert args and args[0] != "fedgate", f"{name}: command repeats `fedgate` after the image's ENTRYPOINT"
        try:
            parse_cli(args)
        except click.UsageError as exc:
            pytest.fail(f"service {name!r}: `fedgate {shlex.join(args)}` is refused by the CLI: {exc}")


def test_services_built_here_use_the_dockerfile_entrypoint() -> None:
    assert dockerfile_entrypoint() == ["fedgate"]
    for name, service in SERVICES.items():
        if builds_this_repo(service):
            assert name in fedgate_services(), f"{name} builds this repo but does not run fedgate"


def test_the_common_settings_come_from_an_anchor() -> None:
    assert "x-fedgate-common" in COMPOSE
    text = COMPOSE_FILE.read_text()
    assert "&fedgate-common" in text and text.count("*fedgate-common") >= 3


# --- redis -----------------------------------------------------------------------------------------------------------


def test_redis_has_aof_a_password_a_volume_and_a_healthcheck() -> None:
    redis = SERVICES["redis"]
    assert str(redis["image"]).split(":")[0] == "redis"
    assert str(redis["image"]).split(":")[1].startswith("7")
    argv = as_argv(redis["command"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--appendfsync") + 1] == "everysec"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction", "an evicted job record or queue is lost work"
    password = argv[argv.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?"), "an unset REDIS_PASSWORD must stop compose, not run open"
    assert any(target == "/data" and kind == "volume" for _, target, _, kind in volume_mounts(redis))
    assert redis["healthcheck"]["test"]
    assert "redis-data" in (COMPOSE.get("volumes") or {})


def test_fedgate_services_use_the_password_protected_redis_and_wait_for_it() -> None:
    for name in fedgate_services():
        env = environment(SERVICES[name])
        if name == "simulator":
            continue  # the simulator stands in for outside partners; it has no Redis
        url = urlsplit(env["FEDGATE_REDIS_URL"])
        assert url.scheme == "redis" and url.hostname == "redis" and url.port == 6379, name
        assert "${REDIS_PASSWORD" in (url.password or ""), f"{name}: Redis URL without the password"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_every_fedgate_service_shares_one_encryption_key_and_config() -> None:
    """The API encrypts prompts and the workers decrypt them: the key must be the same everywhere."""
    envs = {name: environment(SERVICES[name]) for name in fedgate_services() if name != "simulator"}
    keys = {env.get("FEDGATE_ENCRYPTION_KEYS") for env in envs.values()}
    assert len(keys) == 1 and None not in keys, keys
    (key,) = keys
    assert str(key).startswith("${FEDGATE_ENCRYPTION_KEYS:?"), "an unset key must stop compose, not fork keys"
    assert {env.get("FEDGATE_CONFIG") for env in envs.values()} == {"/config/fedgate.yaml"}


# --- api, simulator, flower -----------------------------------------------------------------------------------------


def test_api_listens_on_all_interfaces_on_8700() -> None:
    api = SERVICES["api"]
    assert fedgate_services()["api"][0] == "api"
    env = environment(api)
    assert env["FEDGATE_API_HOST"] == "0.0.0.0"
    assert int(env.get("FEDGATE_API_PORT", DEFAULTS.api_port)) == 8700
    assert any(str(p).endswith("8700:8700") for p in api["ports"])


def test_simulator_listens_on_all_interfaces_on_the_port_the_config_uses(deploy_config: GatewayConfig) -> None:
    ctx = parse_cli(fedgate_services()["simulator"])
    assert ctx.params["host"] == "0.0.0.0"
    port = ctx.params["port"] or DEFAULTS.simulator_port
    for partner in deploy_config.partners.values():
        url = urlsplit(partner.base_url)
        assert url.hostname == "simulator" and url.port == port, partner.base_url


def test_flower_has_basic_auth_from_the_environment_and_publishes_its_port() -> None:
    flower = SERVICES["flower"]
    assert fedgate_services()["flower"][0] == "flower"
    auth = environment(flower)["FEDGATE_FLOWER_BASIC_AUTH"]
    assert auth.startswith("${FEDGATE_FLOWER_BASIC_AUTH:?"), "Flower must not run without basic auth"
    assert DEFAULTS.flower_port == 5555
    assert any(str(p).endswith("5555:5555") for p in flower["ports"])


def flower_exec_args(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The argv `fedgate flower` would exec, with the compose flower service's environment."""
    for name, value in environment(SERVICES["flower"]).items():
        monkeypatch.setenv(name, value)
    captured: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, args: captured.append(list(args)))
    reset_settings_cache()
    try:
        result = CliRunner().invoke(cli, ["flower"])
    finally:
        reset_settings_cache()
    assert result.exit_code == 0, result.output
    assert len(captured) == 1
    return captured[0]


def test_flower_gets_the_basic_auth_and_port_from_the_compose_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.flower_app import use_basic_auth

    args = flower_exec_args(monkeypatch)
    login = environment(SERVICES["flower"])["FEDGATE_FLOWER_BASIC_AUTH"]
    assert not [a for a in args if "basic-auth" in a or login in a], "the login is never on Flower's command line"
    assert "--port=5555" in args
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "")  # restored after the test
    use_basic_auth(Settings())  # what the Flower process does as it loads the app: Flower's own option, from here
    assert os.environ["FLOWER_BASIC_AUTH"] == login


def test_flower_is_reachable_through_its_published_port(monkeypatch: pytest.MonkeyPatch) -> None:
    args = flower_exec_args(monkeypatch)
    addresses = [a.split("=", 1)[1] for a in args if a.startswith("--address=")]
    assert addresses in ([], ["0.0.0.0"]), f"Flower binds {addresses} inside the container"


# --- workers ----------------------------------------------------------------------------------------------------


def test_one_interactive_worker_service_per_partner_and_a_batch_lane_for_all(deploy_config: GatewayConfig) -> None:
    served: dict[str, list[str]] = {"interactive": [], "batch": []}
    for name, args in fedgate_services().items():
        if args[0] != "worker":
            continue
        params = parse_cli(args).params
        partners = [p.strip() for p in params["partners"].split(",") if p.strip()]
        lanes = [lane.strip() for lane in params["lanes"].split(",")]
        assert len(lanes) == 1, f"{name} reads {lanes}: give each lane its own service"
        unknown = set(partners) - set(deploy_config.partners)
        assert not unknown, f"{name} consumes unknown partners {sorted(unknown)}"
        if lanes == ["interactive"]:
            assert len(partners) == 1, f"{name} consumes {partners}: use one worker service per partner queue"
        else:
            assert params["nice"] > 0, f"{name}: a batch-lane worker runs at a lower CPU priority"
        served[lanes[0]].extend(partners)
    assert sorted(served["interactive"]) == sorted(deploy_config.partners), "one interactive worker per partner"
    assert sorted(served["batch"]) == sorted(deploy_config.partners), "every partner's batch lane needs a worker"


# --- mounts and the deploy files -----------------------------------------------------------------------------------


def test_every_mounted_file_exists_and_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for source, target, _, kind in volume_mounts(service):
            if kind == "bind":
                path = (COMPOSE_FILE.parent / source).resolve()
                assert path.exists(), f"service {name!r} mounts {source} at {target}, which is not in the repo"
                assert ROOT in path.parents, f"service {name!r} mounts {source} from outside the repo"
            else:
                assert source in declared, f"service {name!r} uses volume {source!r}, not declared under volumes:"


def test_the_config_is_mounted_read_only_where_fedgate_reads_it() -> None:
    for name in fedgate_services():
        env = environment(SERVICES[name])
        if "FEDGATE_CONFIG" not in env:
            continue
        mounts = {target: (source, ro) for source, target, ro, _ in volume_mounts(SERVICES[name])}
        assert env["FEDGATE_CONFIG"] in mounts, f"{name}: FEDGATE_CONFIG points at an unmounted path"
        source, read_only = mounts[env["FEDGATE_CONFIG"]]
        assert (COMPOSE_FILE.parent / source).resolve() == DEPLOY_CONFIG
        assert read_only, f"{name}: mount the config read-only"


def test_deploy_config_loads(deploy_config: GatewayConfig) -> None:
    assert set(deploy_config.partners) == {"sim-openai", "sim-anthropic"}
    assert deploy_config.partner("sim-openai").fallback == ["sim-anthropic"]
    assert deploy_config.tenant_for_key(USER_ENV["FEDGATE_DEV_API_KEY"]) is deploy_config.tenants["dev"]


def test_deploy_config_tenant_key_comes_only_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_DEV_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"tenants\.dev: give one of api_key"):
        load_config(DEPLOY_CONFIG)


def scrape_jobs() -> dict[str, list[str]]:
    """Prometheus job name -> the hosts it scrapes (static targets and DNS service discovery names)."""
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs: dict[str, list[str]] = {}
    for job in scrape["scrape_configs"]:
        hosts = [t for static in job.get("static_configs", []) for t in static["targets"]]
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A" and dns.get("port"), f"{job['job_name']}: A records need a port"
            hosts += [f"{name}:{dns['port']}" for name in dns["names"]]
        jobs[job["job_name"]] = hosts
    return jobs


def test_prometheus_scrapes_the_api_and_every_worker() -> None:
    prometheus = SERVICES["prometheus"]
    assert str(prometheus["image"]).startswith("prom/prometheus")
    mounts = {target: source for source, target, _, _ in volume_mounts(prometheus)}
    assert (COMPOSE_FILE.parent / mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_CONFIG
    jobs = scrape_jobs()
    targets = {target for hosts in jobs.values() for target in hosts}
    assert "api:8700" in targets
    hosts = {t.split(":")[0] for t in targets} - {"localhost"}
    assert hosts <= set(SERVICES), f"scrape targets that are not compose services: {hosts - set(SERVICES)}"
    workers = {name for name, args in fedgate_services().items() if args[0] == "worker"}
    assert workers and workers <= hosts, f"workers not scraped: {workers - hosts}"
    # Each worker serves its metrics on the default port, on an address other containers reach.
    for name in workers:
        env = environment(SERVICES[name])
        assert env.get("FEDGATE_WORKER_METRICS_HOST") == "0.0.0.0", f"{name} serves its metrics on localhost only"
        port = int(env.get("FEDGATE_WORKER_METRICS_PORT", "9700"))
        assert f"{name}:{port}" in targets, f"{name} is scraped on another port than {port}"
    # Replicas (`--scale`) are all scraped: workers come from DNS, which answers with every replica.
    assert {f"{name}:9700" for name in workers} <= set(jobs["fedgate-workers"])
    assert "flower:5555" in targets, "Flower's own /metrics is not scraped"


# --- grafana ----------------------------------------------------------------------------------------------------

# Series Prometheus itself adds to every scrape (not exported by any process).
PROMETHEUS_SERIES = {"up": {"job", "instance"}, "scrape_duration_seconds": {"job", "instance"}}
TARGET_LABELS = {"job", "instance", "service"}  # added by Prometheus (service: relabelled in deploy/prometheus.yml)
PROMQL_TOKEN = re.compile(
    r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|\[[^\]]*\]|\{[^}]*\}|[A-Za-z_:][A-Za-z0-9_:]*|\S'
)
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"')
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "limitk", "limit_ratio"}  # may be followed by `by (...)` instead of `(`
KEYWORDS = GROUPING | AGGREGATIONS | {"bool", "offset", "and", "or", "unless", "atan2"}


def promql_references(expr: str) -> tuple[dict[str, dict[str, str]], set[str]]:
    """(metric name -> its label matchers {label: value}, labels named in grouping clauses) of one PromQL query."""
    tokens = PROMQL_TOKEN.findall(expr)
    metrics: dict[str, dict[str, str]] = {}
    grouping: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in GROUPING and following == "(":
            i += 2
            while i < len(tokens) and tokens[i] != ")":
                if tokens[i] != ",":
                    grouping.add(tokens[i])
                i += 1
        elif re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", token) and token not in KEYWORDS and following != "(":
            matchers = dict(MATCHER.findall(following)) if following.startswith("{") else {}
            metrics.setdefault(token, {}).update(matchers)
        elif token.startswith("{"):  # a selector without a metric name: {__name__=...}
            names = dict(MATCHER.findall(token))
            assert "__name__" not in names, f"select metrics by name, not {{__name__=...}}: {expr}"
        i += 1
    return metrics, grouping


def test_promql_references_reads_names_matchers_and_grouping() -> None:
    metrics, grouping = promql_references(
        'histogram_quantile(0.95, sum by (partner, le) (rate(fedgate_job_seconds_bucket{partner=~"$partner"}'
        '[$__rate_interval]))) / ignoring(kind) sum(up{job="fedgate-workers"}) * 3600'
    )
    assert metrics == {"fedgate_job_seconds_bucket": {"partner": "$partner"}, "up": {"job": "fedgate-workers"}}
    assert grouping == {"partner", "le", "kind"}


def load_dashboard() -> dict[str, Any]:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    assert isinstance(dashboard, dict)
    return dashboard


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # panels inside a collapsed row
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating query."""
    queries = [(f"panel {p['title']!r}", t["expr"]) for p in dashboard_panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.+?)(?:,\s*([A-Za-z_][A-Za-z0-9_]*))?\)", query.strip())
            assert inner, f"variable {variable['name']}: unexpected query {query!r}"
            grouping = f" by ({inner[2]})" if inner[2] else ""
            queries.append((f"variable {variable['name']!r}", f"{inner[1]}{grouping}"))
    return queries


def test_grafana_service_mounts_the_provisioning_and_the_dashboard() -> None:
    grafana = SERVICES["grafana"]
    assert str(grafana["image"]).startswith("grafana/grafana:"), "pin a Grafana image"
    mounts = {target: (source, read_only) for source, target, read_only, _ in volume_mounts(grafana)}
    source, read_only = mounts["/etc/grafana/provisioning"]
    assert (COMPOSE_FILE.parent / source).resolve() == GRAFANA_DIR / "provisioning" and read_only
    providers = yaml.safe_load(GRAFANA_PROVIDERS.read_text())["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    dashboards_path = provider["options"]["path"]
    source, read_only = mounts[dashboards_path]
    assert (COMPOSE_FILE.parent / source).resolve() == GRAFANA_DASHBOARD.parent and read_only
    assert any(target == "/var/lib/grafana" and kind == "volume" for _, target, _, kind in volume_mounts(grafana))
    env = environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?"), "no default admin password"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home is None or home == f"{dashboards_path}/{GRAFANA_DASHBOARD.name}"
    assert "prometheus" in (grafana.get("depends_on") or [])


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    (datasource,) = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.hostname in SERVICES
    published = {str(p).rsplit(":", 1)[-1] for p in SERVICES["prometheus"].get("ports", [])}
    assert str(url.port) in published | {"9090"}
    # Every panel and variable uses this datasource (by uid), so the provisioned dashboard works as it is.
    dashboard = load_dashboard()
    for panel in dashboard_panels(dashboard):
        for owner in [panel, *panel.get("targets", [])]:
            if "datasource" in owner and panel["type"] != "row":
                assert owner["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == datasource["uid"], variable["name"]


def test_dashboard_is_valid_grafana_json() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    # No two panels overlap on the grid.
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        for y in range(grid["y"], grid["y"] + grid["h"]):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_covers_what_operators_watch() -> None:
    """Jobs by partner/tenant/outcome, the three latency histograms, queue depth per partner and lane, dead letters,
    bucket fill, breaker state, retries, fallbacks, redactions by entity type, contracts, tokens, cost, budgets."""
    queries = [expr for _, expr in dashboard_queries(load_dashboard())]
    used: dict[str, set[frozenset[str]]] = {}
    for expr in queries:
        metrics, grouping = promql_references(expr)
        for name in metrics:
            used.setdefault(name, set()).add(frozenset(grouping))

    def grouped(metric: str, *labels: str) -> bool:
        return any(set(labels) <= group for group in used.get(metric, set()))

    assert grouped("fedgate_jobs_total", "partner", "outcome") and grouped("fedgate_jobs_total", "tenant", "outcome")
    for histogram in ("fedgate_queue_wait_seconds", "fedgate_partner_call_seconds", "fedgate_job_seconds"):
        assert grouped(f"{histogram}_bucket", "partner", "le"), histogram
        assert any(f"histogram_quantile(0.95, sum by (partner, le) (rate({histogram}_bucket" in q for q in queries)
    assert grouped("fedgate_queue_depth", "partner", "lane")
    assert "fedgate_dead_letter_queue_size" in used and grouped("fedgate_dead_letters", "partner")
    assert grouped("fedgate_bucket_fill_ratio", "partner", "bucket")
    assert grouped("fedgate_breaker_state", "partner")
    assert grouped("fedgate_retries_total", "partner")
    assert grouped("fedgate_fallbacks_total", "from_partner", "to_partner")
    assert grouped("fedgate_redactions_total", "entity_type")
    assert grouped("fedgate_contract_validations_total", "contract", "result")
    assert grouped("fedgate_tokens_total", "partner", "kind")
    assert grouped("fedgate_cost_usd_total", "partner")
    assert grouped("fedgate_tenant_budget_used_ratio", "tenant", "period")
    # Fleet state is the same on every API: never summed across API instances.
    for expr in queries:
        for name in promql_references(expr)[0]:
            if name in {"fedgate_queue_depth", "fedgate_dead_letter_queue_size", "fedgate_breaker_state",
                        "fedgate_bucket_fill_ratio"}:
                assert not re.search(rf"\bsum\b[^()]*\(\s*{name}\b", expr), f"{expr}: use max, not sum"


# --- Dockerfile -----------------------------------------------------------------------------------------------------


def test_dockerfile_installs_the_project_as_a_non_root_user() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    install = next(i for i, line in enumerate(lines) if re.match(r"RUN pip install \.", line))
    users = [(i, line.split()[1]) for i, line in enumerate(lines) if line.startswith("USER ")]
    assert users, "Dockerfile never switches away from root"
    last_index, last_user = users[-1]
    assert last_index > install and last_user not in {"root", "0"}
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                if not any(ch in source for ch in "*?["):
                    assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"
