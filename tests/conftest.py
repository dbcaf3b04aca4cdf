"""Session fixtures: a real Redis server, the partner simulator, the API and workers as real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gateway_core.fleet.embedded_redis import EmbeddedRedis
from gateway_core.webhooks import load_or_create_secret
from partner_simulator import SimulatorConfig
from tests.helpers import FleetEnv, Proc, free_port, http_ok, wait_for

TEST_CONFIG = Path(__file__).with_name("fleet_config.yaml")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Iterator[FleetEnv]:
    """Simulator + API processes shared by the integration tests; tests start the workers they need."""
    home = tmp_path_factory.mktemp("fedgate-home")
    sim_port, api_port = free_port(), free_port()
    (home / "dev-api-key").write_text("test-key-dev\n")
    load_or_create_secret(home / "dev-webhook-secret")
    sim_config = home / "simulator.json"  # the demo partners, recording what they receive (for leak tests)
    sim_config.write_text(SimulatorConfig.demo().model_copy(update={"record_bodies": True}).model_dump_json())
    env = dict(os.environ)
    env.update(
        {
            "FEDGATE_HOME": str(home),
            "FEDGATE_REDIS_URL": redis_server.url,
            "FEDGATE_CONFIG": str(TEST_CONFIG),
            "FEDGATE_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}",
            "FEDGATE_SIMULATOR_PORT": str(sim_port),
            "FEDGATE_API_PORT": str(api_port),
            "FEDGATE_API_URL": f"http://127.0.0.1:{api_port}",
            "FEDGATE_API_KEY": "test-key-dev",
            "FEDGATE_VISIBILITY_TIMEOUT_S": "10",
            "FEDGATE_MAX_PROMPT_CHARS": "5000",
            "FEDGATE_SIM_CONFIG": str(sim_config),
            "FEDGATE_FLOWER_PORT": str(free_port()),
            "FEDGATE_FLOWER_BASIC_AUTH": "operator:test-flower-password",
        }
    )
    fleet_env = FleetEnv(home, env)
    fleet_env.spawn("simulator", "simulate")
    fleet_env.spawn("api", "api")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{sim_port}/healthz"), 30, what="simulator")
    wait_for(lambda: http_ok(f"http://127.0.0.1:{api_port}/healthz"), 30, what="api")
    yield fleet_env
    fleet_env.stop_all()


@pytest.fixture(scope="module")
def worker(fleet: FleetEnv) -> Iterator[Proc]:
    """A worker consuming both demo partners' queues (and webhooks), for one test module."""
    proc = fleet.start_worker("sim-openai,sim-anthropic")
    yield proc
    proc.stop()


@pytest.fixture()
def api(fleet: FleetEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.env["FEDGATE_API_URL"], headers={"authorization": "Bearer test-key-dev"},
                      timeout=60) as client:
        yield client


@pytest.fixture()
def sim(fleet: FleetEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.env["FEDGATE_SIMULATOR_URL"], timeout=10) as client:
        client.post("/_sim/reset")
        yield client
