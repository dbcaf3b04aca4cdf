"""Redis through Sentinel: a real master, replica and three sentinels (quorum 2; passwords on both), the API and a
worker as real processes on a sentinel:// URL listing all three, and a failover they ride through: the first listed
sentinel and then the master are SIGKILLed, the other two promote the replica."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from flower.utils.broker import Broker
from kombu.transport.redis import SentinelTransport as KombuSentinelTransport
from redis.sentinel import SentinelConnectionPool

from gateway_core.fleet.embedded_redis import EmbeddedRedis, redis_server_binary
from gateway_core.fleet.redis_clients import BlockingSentinelPool, async_client, sync_client
from gateway_core.settings import Settings, reset_settings_cache
from tests.helpers import FleetEnv, Proc, free_port, http_ok, wait_for
from workers.broker import SentinelTransport
from workers.celery_app import make_celery

pytestmark = pytest.mark.fleet

MASTER = "mymaster"
MASTER_PASSWORD = "master-secret"
SENTINEL_PASSWORD = "sentinel-secret"
TEST_CONFIG = Path(__file__).resolve().parent.parent / "fleet_config.yaml"
TERMINAL = {"succeeded", "failed", "dead_lettered", "cancelled"}

SENTINEL_CONF = """\
port {port}
bind 127.0.0.1
dir {dir}
logfile {dir}/sentinel.log
requirepass {sentinel_password}
sentinel monitor {master} 127.0.0.1 {master_port} 2
sentinel auth-pass {master} {master_password}
sentinel down-after-milliseconds {master} 500
sentinel failover-timeout {master} 5000
"""


@dataclass
class SentinelGroup:
    master: EmbeddedRedis
    replica: EmbeddedRedis
    sentinels: list[subprocess.Popen[bytes]]
    sentinel_ports: list[int]

    @property
    def sentinel_port(self) -> int:
        """The first sentinel in the URL."""
        return self.sentinel_ports[0]

    @property
    def url(self) -> str:
        """kombu's form: the master's password once, on the first part."""
        return ";".join(f"sentinel://:{MASTER_PASSWORD}@127.0.0.1:{port}" if i == 0 else f"sentinel://127.0.0.1:{port}"
                        for i, port in enumerate(self.sentinel_ports))

    def settings(self, **changes: str) -> Settings:
        values = {"redis_url": self.url, "redis_sentinel_password": SENTINEL_PASSWORD, **changes}
        return Settings(**values)  # type: ignore[arg-type]

    def ask_sentinel(self) -> redis.Redis:
        """A sentinel still running."""
        port = next(port for port, process in zip(self.sentinel_ports, self.sentinels, strict=True)
                    if process.poll() is None)
        return redis.Redis(port=port, password=SENTINEL_PASSWORD, decode_responses=True, socket_timeout=2)

    def sentinels_agree(self) -> bool:
        """Every sentinel sees the replica in sync and knows the two others (a failover needs a quorum of two)."""
        for port in self.sentinel_ports:
            ask = redis.Redis(port=port, password=SENTINEL_PASSWORD, decode_responses=True, socket_timeout=2)
            try:
                replicas, peers = ask.sentinel_slaves(MASTER), ask.sentinel_sentinels(MASTER)
            except redis.RedisError:
                return False
            in_sync = any(r["port"] == self.replica.port and not r["is_sdown"] and r.get("master-link-status") == "ok"
                          for r in replicas)
            if not in_sync or len(peers) < len(self.sentinel_ports) - 1:
                return False
        return True

    def master_port(self) -> int | None:
        try:
            found = self.ask_sentinel().sentinel_get_master_addr_by_name(MASTER)
        except redis.RedisError:
            return None
        return int(found[1]) if found else None


def _data_node(directory: Path) -> EmbeddedRedis:
    node = EmbeddedRedis(directory, free_port()).start()
    client = redis.Redis(port=node.port)
    client.config_set("masterauth", MASTER_PASSWORD)  # a replica authenticates to its master
    client.config_set("requirepass", MASTER_PASSWORD)
    return node


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    home = tmp_path_factory.mktemp("sentinel-group")
    master = _data_node(home / "master")
    replica = _data_node(home / "replica")
    redis.Redis(port=replica.port, password=MASTER_PASSWORD).replicaof("127.0.0.1", master.port)
    ports, processes = [], []
    for i in range(3):
        directory = home / f"sentinel-{i}"
        directory.mkdir()
        port = free_port()
        conf = directory / "sentinel.conf"  # Sentinel rewrites its config file: it must be writable
        conf.write_text(SENTINEL_CONF.format(port=port, dir=directory, sentinel_password=SENTINEL_PASSWORD,
                                             master=MASTER, master_port=master.port, master_password=MASTER_PASSWORD))
        ports.append(port)
        processes.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
    found = SentinelGroup(master, replica, processes, ports)
    try:
        # Sentinels learn replicas from the master's INFO and each other from hellos on it; a failover needs a
        # replica known to be in sync and a quorum.
        wait_for(found.sentinels_agree, 60, interval=0.1, what="the sentinels to see the replica and each other")
        yield found
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        replica.stop()
        master.stop()


@pytest.fixture(scope="module")
def sentinel_fleet(tmp_path_factory: pytest.TempPathFactory, group: SentinelGroup) -> Iterator[FleetEnv]:
    """Simulator, API and one worker, every Redis connection through the sentinel."""
    home = tmp_path_factory.mktemp("sentinel-fleet")
    (home / "dev-api-key").write_text("test-key-dev\n")
    sim_port, api_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "FEDGATE_HOME": str(home),
        "FEDGATE_REDIS_URL": group.url,
        "FEDGATE_REDIS_SENTINEL_MASTER": MASTER,
        "FEDGATE_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "FEDGATE_CONFIG": str(TEST_CONFIG),
        "FEDGATE_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}",
        "FEDGATE_SIMULATOR_PORT": str(sim_port),
        "FEDGATE_API_PORT": str(api_port),
        "FEDGATE_API_URL": f"http://127.0.0.1:{api_port}",
        "FEDGATE_VISIBILITY_TIMEOUT_S": "10",
        "FEDGATE_WORKER_METRICS_PORT": str(free_port()),
    })
    env.pop("REDIS_URL", None)
    fleet = FleetEnv(home, env)
    try:
        fleet.spawn("simulator", "simulate")
        api = fleet.spawn("api", "api")
        wait_for(lambda: http_ok(f"http://127.0.0.1:{sim_port}/healthz"), 30, what="simulator")
        wait_for(lambda: http_ok(f"{env['FEDGATE_API_URL']}/healthz") or api.process.poll() is not None, 60,
                 what="api")
        assert api.process.poll() is None, api.output()[-3000:]
        fleet.start_worker("sim-openai,sim-anthropic", concurrency=20)
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture()
def client(sentinel_fleet: FleetEnv) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sentinel_fleet.env["FEDGATE_API_URL"], timeout=30,
                      headers={"authorization": "Bearer test-key-dev"}) as http:
        yield http


def submit(api: httpx.Client, prompt: str) -> str:
    def accepted() -> str | None:
        response = api.post("/v1/jobs", json={"partner": "sim-openai", "prompt": prompt})
        if response.status_code == 503:  # the store is between masters: a client retries
            return None
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    return wait_for(accepted, 30, interval=0.2, what="the API to accept a job")


def finish(api: httpx.Client, job_id: str) -> dict:
    def finished() -> dict | None:
        response = api.get(f"/v1/jobs/{job_id}", params={"wait": 10})
        if response.status_code == 503:
            return None
        job = response.json()
        return job if job["status"] in TERMINAL else None

    return wait_for(finished, 60, what=f"job {job_id} to finish")


def test_worker_and_flower_transports_follow_the_url(group: SentinelGroup,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with make_celery(group.settings()).connection_for_write() as conn:
        assert isinstance(conn.transport, SentinelTransport)  # ours: every broker.py optimisation kept
        channel = conn.default_channel
        assert isinstance(channel.pool, SentinelConnectionPool)
        assert channel.client.info("server")["tcp_port"] == group.master_port()
        assert channel._take_more("partner.nothing-here") == []  # our Lua fetch runs on the sentinel-found master
    monkeypatch.setenv("FEDGATE_REDIS_URL", group.url)
    monkeypatch.setenv("FEDGATE_REDIS_SENTINEL_PASSWORD", SENTINEL_PASSWORD)
    reset_settings_cache()
    try:
        from workers.flower_app import make_flower_celery

        flower_app = make_flower_celery()
        with flower_app.connection_for_write() as conn:
            assert type(conn.transport) is KombuSentinelTransport  # kombu's stock one, for Flower's Broker page
            assert conn.transport_options["master_name"] == MASTER
            assert conn.default_channel.client.ping()
            broker = Broker(conn.as_uri(include_password=True),
                            broker_options=flower_app.conf.broker_transport_options)
        assert asyncio.run(broker.queues(["partner.sim-openai"])) == [{"name": "partner.sim-openai", "messages": 0}]
    finally:
        reset_settings_cache()


def test_clients_say_what_is_wrong_with_the_sentinel_settings(group: SentinelGroup) -> None:
    with pytest.raises(redis.ConnectionError, match=r"monitors no master 'nope'.*FEDGATE_REDIS_SENTINEL_MASTER"):
        sync_client(group.settings(redis_sentinel_master="nope")).ping()
    with pytest.raises(redis.ConnectionError, match=rf"127.0.0.1:{group.sentinel_port}: AuthenticationError"):
        sync_client(group.settings(redis_sentinel_password="wrong")).ping()



def test_the_workers_pool_is_bounded_and_waits_for_a_free_connection(group: SentinelGroup) -> None:
    """What workers/runtime.py gets: a BlockingConnectionPool's behaviour with Sentinel's master discovery."""

    async def two_blocking_calls_on_one_connection() -> list[object]:
        client = async_client(group.settings(), max_connections=1, pool_timeout_s=5)
        try:
            assert isinstance(client.connection_pool, BlockingSentinelPool)
            return list(await asyncio.gather(client.blpop(["fg:sentinel-empty"], timeout=0.2),
                                             client.blpop(["fg:sentinel-empty"], timeout=0.2)))
        finally:
            await client.aclose()

    assert asyncio.run(two_blocking_calls_on_one_connection()) == [None, None]  # the second waited, not failed


def test_a_job_runs_end_to_end_through_sentinel(client: httpx.Client, sentinel_fleet: FleetEnv) -> None:
    job = finish(client, submit(client, "Hello through Sentinel"))
    assert job["status"] == "succeeded", job
    assert job["output"] == "Simulated reply from sim-openai: Hello through Sentinel"


def test_jobs_keep_running_after_a_failover(client: httpx.Client, sentinel_fleet: FleetEnv,
                                            group: SentinelGroup) -> None:
    """Runs last: with partner calls in flight, SIGKILLs the URL's first sentinel and then the master; the other two
    sentinels promote the replica; the same API and worker processes go on, the jobs in flight finish, and a job
    submitted after the failover succeeds."""
    before = finish(client, submit(client, "before the failover"))
    assert before["status"] == "succeeded"
    sim = httpx.Client(base_url=sentinel_fleet.env["FEDGATE_SIMULATOR_URL"], timeout=10)
    sim.put("/_sim/partners/sim-openai", json={"latency_ms": 1000})
    try:
        in_flight = [submit(client, f"in flight {i}") for i in range(5)]
        wait_for(lambda: all(client.get(f"/v1/jobs/{job_id}").json()["status"] == "running" for job_id in in_flight),
                 30, interval=0.1, what="the jobs' partner calls to be in flight")
        master = redis.Redis(port=group.master.port, password=MASTER_PASSWORD)
        assert master.wait(1, 5000) == 1  # what was written so far is on the replica; async replication, else
        first_sentinel = group.sentinels[0]  # the URL's first: clients must ask the others from now on
        first_sentinel.kill()
        first_sentinel.wait()
        assert group.master.process is not None
        group.master.process.kill()
        group.master.process.wait()
        wait_for(lambda: group.master_port() == group.replica.port, 30, interval=0.1,
                 what="Sentinel to promote the replica")
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})
        after = finish(client, submit(client, "after the failover"))
        # Calls that ended while Redis had no master could not publish: their jobs come back once the visibility
        # timeout (10 s here) has passed, and run again.
        survivors = [finish(client, job_id) for job_id in in_flight]
    finally:
        sim.put("/_sim/partners/sim-openai", json={"latency_ms": 0})
        sim.close()
    assert after["status"] == "succeeded", after
    assert after["output"] == "Simulated reply from sim-openai: after the failover"
    assert [job["status"] for job in survivors] == ["succeeded"] * 5
    assert {job["output"] for job in survivors} == {f"Simulated reply from sim-openai: in flight {i}" for i in range(5)}
    assert finish(client, before["id"])["status"] == "succeeded"  # replicated, now read from the new master
    procs: list[Proc] = sentinel_fleet.procs
    assert all(proc.process.poll() is None for proc in procs), "a fleet process died in the failover"
