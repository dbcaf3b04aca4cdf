"""Session fixtures: a real Redis server, the partner simulator, the API and workers as real processes.

The split (tests/unit/conftest.py enforces the first line):
- tests/unit/: no Redis server, no subprocesses, no network beyond loopback servers the test itself starts
  (in-process HTTP servers are fine). A unit test that asks for `redis_server`, `redis_url`, `redis_client` or
  `fleet` (or `api`, `sim`, `worker`, which need it), starts a process or connects off the machine fails.
- tests/integration/: whatever needs a real redis-server, worker or API processes, or another program.

Isolation: order does not matter, and no test cleans up for another (nothing is flushed, nothing is deleted "for
later tests").
- A test (or a module's fixture) that uses Redis itself gets a logical database of its own, never handed out
  before: `redis_url` / `redis_client` per test, `redis_databases.url()` for a module. The session's server is
  started with enough databases for the whole run.
- The shared fleet (simulator, API; workers per module) runs on a database of its own too. Tests that go through
  it assert only on what they created: their own job ids, batches, contracts, tenants and partners, deltas of
  shared counters (queue depths, metrics) rather than absolute values, and the partner calls their own prompts
  made (`calls_with`: the simulator records every body). A module that makes partners fail, or needs a state
  nobody else touches, starts a fleet of its own (`start_fleet`) on its own database.
- The `sim` fixture gives each test the simulator as it started (behaviour, settings, stats): a test that changes
  a partner's behaviour need not restore it for the next one.
- Redis pub/sub channels are not per database: a subscriber may hear other tests' events and must ignore ids it
  does not know.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gateway_core.fleet.embedded_redis import EmbeddedRedis
from partner_simulator import SimulatorConfig
from tests.helpers import TEST_CONFIG as TEST_CONFIG  # for the tests that import it from here
from tests.helpers import FleetEnv, Proc, RedisDatabases, free_port, start_fleet

# Logical databases on the session's server: one per test or module that uses Redis, each used once (about 150
# are used by a full run; an idle database costs Redis a few hundred bytes).
REDIS_DATABASES = 4096


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port(), databases=REDIS_DATABASES).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_databases(redis_server: EmbeddedRedis) -> RedisDatabases:
    return RedisDatabases(redis_server)


@pytest.fixture()
def redis_url(redis_databases: RedisDatabases) -> str:
    """A Redis database of this test's own: empty at the start, and nobody else's."""
    return redis_databases.url()


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on this test's own database (`redis_url`)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_databases: RedisDatabases) -> Iterator[FleetEnv]:
    """Simulator + API processes shared by the integration tests, on a Redis database of their own (read it through
    `fleet_redis` or `fleet.env["FEDGATE_REDIS_URL"]`); modules start the workers they need. A module that makes
    partners fail (and so opens their breakers) overrides this fixture with a fleet of its own (`start_fleet`)."""
    fleet_env = start_fleet(tmp_path_factory.mktemp("fedgate-home"), redis_databases.url())
    yield fleet_env
    fleet_env.stop_all()


@pytest.fixture()
def fleet_redis(fleet: FleetEnv) -> Iterator[redis.Redis]:
    """A client on the shared fleet's database: read what this test's own jobs left there, nothing else."""
    client = redis.Redis.from_url(fleet.env["FEDGATE_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def worker(fleet: FleetEnv) -> Iterator[Proc]:
    """A worker consuming both demo partners' queues (and webhooks), for one test module."""
    proc = fleet.start_worker("sim-openai,sim-anthropic")
    yield proc
    proc.stop()


# uvicorn closes a connection idle for 5 s; a client that reuses one as it closes gets "Server disconnected". Ours
# let theirs go sooner (a test that waits for a worker to start easily sits idle that long).
KEEPALIVE = httpx.Limits(keepalive_expiry=2.0)


@pytest.fixture()
def api(fleet: FleetEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.env["FEDGATE_API_URL"], headers={"authorization": "Bearer test-key-dev"},
                      timeout=60, limits=KEEPALIVE) as client:
        yield client


@pytest.fixture()
def sim(fleet: FleetEnv) -> Iterator[httpx.Client]:
    """The fleet's simulator as this test starts it: every partner behaving as at start-up (whatever an earlier
    test set), the simulator's settings too, and stats and recorded bodies zeroed."""
    started = SimulatorConfig.model_validate_json(Path(fleet.env["FEDGATE_SIM_CONFIG"]).read_text())
    with httpx.Client(base_url=fleet.env["FEDGATE_SIMULATOR_URL"], timeout=10, limits=KEEPALIVE) as client:
        for name, partner in started.partners.items():
            client.put(f"/_sim/partners/{name}", json=partner.behaviour.model_dump()).raise_for_status()
        client.put("/_sim/settings", json={"compress": started.compress}).raise_for_status()
        client.post("/_sim/reset").raise_for_status()
        yield client
