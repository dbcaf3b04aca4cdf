"""fedgate benchmarks. Every figure is measured against a baseline taken in the same run on the same Redis.

  scripts/bench            core pipeline figures (issue 2): round trip, throughput, calls in flight
  scripts/bench --json     print one JSON object instead of the table
  scripts/bench --quick    smaller job counts (a smoke run; figures are noisier)
  scripts/bench --mixed    interactive round trip while a 10,000-job batch drains (issue 6)
  scripts/bench --ttft     time to first token through the gateway (openai SDK, stream=True) vs the partner
                           directly, same run (issue 16)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import redis.asyncio as aioredis
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway_api.fleet import BATCH_WORKER_NICE  # noqa: E402
from gateway_core.config import load_config  # noqa: E402
from gateway_core.crypto import load_cipher  # noqa: E402
from gateway_core.fleet import keys  # noqa: E402
from gateway_core.fleet.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway_core.jobs.models import JobSubmission  # noqa: E402
from gateway_core.jobs.store import JobStore  # noqa: E402
from gateway_core.jobs.submission import JobProducer  # noqa: E402
from gateway_core.settings import Settings  # noqa: E402
from workers.celery_app import make_celery  # noqa: E402
from workers.enqueue import CeleryEnqueuer  # noqa: E402


def bench_config(sim: str, *, rpm: int | None = None, failover: bool = False) -> str:
    """The partners a benchmark runs against, all on the simulator started for it."""
    bench: dict[str, Any] = {"adapter": "openai", "base_url": f"{sim}/sim-openai/v1", "model": "sim-gpt",
                             "api_key": "sk-bench", "timeout_s": 30}
    partners: dict[str, Any] = {"bench": bench}
    if rpm:
        bench["limits"] = {"requests_per_minute": rpm}
    if failover:
        bench.update(retry={"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05},
                     breaker={"window_s": 30, "min_calls": 10, "failure_rate": 0.5, "cooldown_s": 30},
                     fallback=["backup"])
        partners["backup"] = {"adapter": "anthropic", "base_url": f"{sim}/sim-anthropic", "model": "sim-claude",
                              "api_key": "sk-bench", "timeout_s": 30}
    return yaml.safe_dump({"partners": partners, "tenants": {"bench": {"api_key": "bench-key"}}})


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(interval)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class BenchFleet:
    home: Path
    redis: EmbeddedRedis
    sim_url: str
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, **config: Any) -> BenchFleet:
        home = Path(tempfile.mkdtemp(prefix="fedgate-bench-"))
        server = EmbeddedRedis(home / "redis", free_port()).start()
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        (home / "fedgate.yaml").write_text(bench_config(sim_url, **config))
        env = dict(os.environ)
        env.update({
            "FEDGATE_HOME": str(home),
            "FEDGATE_REDIS_URL": server.url,
            "FEDGATE_CONFIG": str(home / "fedgate.yaml"),
            "FEDGATE_SIMULATOR_PORT": str(sim_port),
            "BENCH_REDIS_URL": server.url.replace("/0", "/1"),
            "PYTHONPATH": f"{ROOT}:{ROOT / 'scripts'}",
        })
        os.environ["BENCH_REDIS_URL"] = env["BENCH_REDIS_URL"]  # for the baseline's client side, in this process
        fleet = cls(home, server, sim_url, env)
        fleet.spawn("simulator", [sys.executable, "-m", "gateway_api.cli", "simulate"])
        wait_until(lambda: _http_ok(f"{sim_url}/healthz"), 30, "simulator")
        return fleet

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def start_workers(self, count: int, concurrency: int, partners: str = "bench", lanes: str = "interactive,batch",
                      nice: int = 0, idle_cpu: bool = False) -> list[subprocess.Popen[bytes]]:
        procs = []
        for i in range(count):
            name = f"worker-{len(self.procs)}-{i}"
            procs.append(self.spawn(name, [sys.executable, "-m", "gateway_api.cli", "worker", "--partners", partners,
                                           "--concurrency", str(concurrency), "--loglevel", "WARNING",
                                           "--lanes", lanes, "--nice", str(nice),
                                           *(["--idle-cpu"] if idle_cpu else [])]))
        return procs

    def start_noop_worker(self, pool: str, concurrency: int) -> subprocess.Popen[bytes]:
        return self.spawn(f"noop-{pool}", [sys.executable, "-m", "celery", "-A", "bench_noop_app", "worker",
                                            "-P", pool, "-c", str(concurrency), "-Q", "bench.noop",
                                            "--loglevel", "WARNING", "--without-mingle", "--without-gossip"])

    def sim_behaviour(self, partner: str = "sim-openai", **behaviour: Any) -> None:
        httpx.put(f"{self.sim_url}/_sim/partners/{partner}", json=behaviour, timeout=10).raise_for_status()

    def sim_settings(self, **settings: Any) -> None:
        httpx.put(f"{self.sim_url}/_sim/settings", json=settings, timeout=10).raise_for_status()

    def sim_stats(self, partner: str) -> dict[str, Any]:
        return httpx.get(f"{self.sim_url}/_sim/stats", timeout=10).json()["partners"][partner]  # type: ignore[no-any-return]

    def sim_reset(self) -> None:
        httpx.post(f"{self.sim_url}/_sim/reset", timeout=10).raise_for_status()

    def stop(self, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
        for proc in procs if procs is not None else self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs if procs is not None else self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        self.redis.stop()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class FedgateClient:
    """Submits jobs through the real producer and hears completions on the done channel."""

    def __init__(self, fleet: BenchFleet) -> None:
        self.settings = Settings(home=fleet.home, redis_url=fleet.redis.url, config=fleet.home / "fedgate.yaml")
        self.config = load_config(self.settings.config)
        self.tenant = self.config.tenants["bench"]
        self.done_at: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}

    async def __aenter__(self) -> FedgateClient:
        pool = aioredis.BlockingConnectionPool.from_url(self.settings.redis_url or "", decode_responses=True,
                                                        max_connections=500, timeout=60)
        self.redis = aioredis.Redis(connection_pool=pool)
        store = JobStore(self.redis, load_cipher(self.settings), 3600)
        self.producer = JobProducer(store, self.config, self.settings, CeleryEnqueuer(make_celery(self.settings)))
        self.pubsub = self.redis.pubsub()
        await self.pubsub.subscribe(keys.DONE_CHANNEL)
        self.listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *_: object) -> None:
        self.listener.cancel()
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def _listen(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                job_id = message["data"]
                self.done_at[job_id] = time.perf_counter()
                waiter = self.waiters.pop(job_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(self.done_at[job_id])

    async def submit(self, prompt: str = "benchmark prompt", partner: str = "bench") -> str:
        record = await self.producer.submit(self.tenant, JobSubmission(partner=partner, prompt=prompt))
        return record.id

    async def wait_done(self, job_id: str, timeout: float = 30) -> float:
        if job_id in self.done_at:
            return self.done_at[job_id]
        future = asyncio.get_running_loop().create_future()
        self.waiters[job_id] = future
        return await asyncio.wait_for(future, timeout)

    async def finished_times(self, ids: list[str]) -> list[float]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id), "finished_at")
        return [float(v) for v in await pipe.execute() if v]


def _steady_rate(finished: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Completions per second between the low and high quantiles (skips warm-up and drain)."""
    ordered = sorted(finished)
    first, last = int(low * len(ordered)), int(high * len(ordered)) - 1
    span = ordered[last] - ordered[first]
    return (last - first) / span if span > 0 else float("inf")


async def fedgate_roundtrip(fleet: BenchFleet, n: int, gap_s: float = 0.0) -> list[float]:
    async with FedgateClient(fleet) as client:
        await client.wait_done(await client.submit(), timeout=60)  # the worker is up
        for _ in range(20):  # warm connections, pools and the partner's keep-alive
            await client.wait_done(await client.submit())
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            done = await client.wait_done(await client.submit())
            samples.append((done - started) * 1000)
            if gap_s:
                await asyncio.sleep(gap_s)
        return samples


async def fedgate_preload(fleet: BenchFleet, n: int) -> tuple[FedgateClient, list[str]]:
    client = FedgateClient(fleet)
    await client.__aenter__()
    ids: list[str] = []
    for start in range(0, n, 250):
        ids += await asyncio.gather(*(client.submit() for _ in range(min(250, n - start))))
    return client, ids


async def fedgate_drain(client: FedgateClient, ids: list[str], timeout: float,
                        on_tick: Callable[[], None] | None = None) -> list[float]:
    deadline = time.monotonic() + timeout
    while sum(1 for i in ids if i in client.done_at) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: only {sum(1 for i in ids if i in client.done_at)}/{len(ids)} jobs finished")
        if on_tick:
            on_tick()
        await asyncio.sleep(0.2)
    finished = await client.finished_times(ids)
    await client.__aexit__()
    return finished


def noop_roundtrip(n: int) -> list[float]:
    from bench_noop_app import noop

    noop.delay().get(timeout=60)  # the worker is up
    for _ in range(20):
        noop.delay().get(timeout=10)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        noop.delay().get(timeout=10)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def noop_throughput(fleet: BenchFleet, n: int, pool: str, concurrency: int) -> float:
    from datetime import datetime

    from bench_noop_app import noop

    ids = [noop.delay().id for _ in range(n)]
    worker = fleet.start_noop_worker(pool, concurrency)
    client = redis.Redis.from_url(fleet.env["BENCH_REDIS_URL"])
    wait_until(lambda: sum(1 for _ in client.scan_iter("celery-task-meta-*", count=5000)) >= n, 300,
               "baseline no-op jobs", interval=0.25)
    fleet.stop([worker])
    metas = client.mget([f"celery-task-meta-{i}" for i in ids])
    finished = [datetime.fromisoformat(json.loads(m)["date_done"]).timestamp() for m in metas if m]
    client.flushdb()
    return _steady_rate(finished)


def bench_core(quick: bool) -> dict[str, Any]:
    n_rt, n_tp, n_inflight = (100, 1000, 3000) if quick else (500, 5000, 8000)
    fleet = BenchFleet.start()
    out: dict[str, Any] = {}
    try:
        # (a) serial round trip vs bare Celery no-op, same Redis
        noop_worker = fleet.start_noop_worker("prefork", 2)
        base_rt = noop_roundtrip(n_rt)
        fleet.stop([noop_worker])
        workers = fleet.start_workers(1, 1000)
        # The simulator compresses its answers as real APIs do; the same run measures it with compression off,
        # in alternating rounds so drift on a shared host falls on both sides alike.
        ours_rt: list[float] = []
        plain_rt: list[float] = []
        for round_number in range(4):
            compressed = round_number % 2 == 0
            fleet.sim_settings(compress=compressed)
            (ours_rt if compressed else plain_rt).extend(asyncio.run(fedgate_roundtrip(fleet, n_rt // 2)))
        fleet.sim_settings(compress=True)
        fleet.stop(workers)
        out.update({
            "roundtrip_uncompressed_p50_ms": statistics.median(plain_rt),
            "compressed_vs_uncompressed_roundtrip": statistics.median(ours_rt) / statistics.median(plain_rt),
            "roundtrip_p50_ms": statistics.median(ours_rt),
            "roundtrip_p99_ms": percentile(ours_rt, 0.99),
            "baseline_roundtrip_p50_ms": statistics.median(base_rt),
            "baseline_roundtrip_p99_ms": percentile(base_rt, 0.99),
        })
        out["roundtrip_ratio"] = out["roundtrip_p50_ms"] / out["baseline_roundtrip_p50_ms"]
        out["roundtrip_p99_ratio"] = out["roundtrip_p99_ms"] / out["baseline_roundtrip_p99_ms"]

        # (b) sustained throughput over a preloaded backlog, two worker processes each side
        base_tp = noop_throughput(fleet, n_tp, "prefork", 2)
        out.update(asyncio.run(_fedgate_throughput(fleet, n_tp)))
        out["baseline_jobs_per_s"] = base_tp
        out["throughput_ratio"] = out["jobs_per_s"] / base_tp

        # (c) one worker process, 2 s partner latency, 1,000 calls in flight
        fleet.sim_behaviour(latency_ms=2000)
        out.update(asyncio.run(_fedgate_inflight(fleet, n_inflight, 1000)))
        fleet.sim_behaviour(latency_ms=0)
    finally:
        fleet.close()
    return out


async def _fedgate_throughput(fleet: BenchFleet, n: int) -> dict[str, Any]:
    client, ids = await fedgate_preload(fleet, n)
    workers = fleet.start_workers(2, 1000)
    finished = await fedgate_drain(client, ids, 600)
    fleet.stop(workers)
    return {"jobs_per_s": _steady_rate(finished), "throughput_jobs": n}


async def _fedgate_inflight(fleet: BenchFleet, n: int, concurrency: int) -> dict[str, Any]:
    client, ids = await fedgate_preload(fleet, n)
    fleet.sim_reset()
    (worker,) = fleet.start_workers(1, concurrency)
    process = psutil.Process(worker.pid)
    peak = {"rss": 0}

    def sample_rss() -> None:
        with contextlib.suppress(psutil.Error):
            peak["rss"] = max(peak["rss"], process.memory_info().rss)

    finished = await fedgate_drain(client, ids, 900, on_tick=sample_rss)
    fleet.stop([worker])
    rate = _steady_rate(finished)
    ideal = concurrency / 2.0
    # What the partner saw: the worker's bound is on calls in flight, so this must never exceed the concurrency.
    max_calls = fleet.sim_stats("sim-openai")["max_in_flight"]
    if max_calls > concurrency:
        raise RuntimeError(f"bench: {max_calls} partner calls in flight at once, over the concurrency {concurrency}")
    return {
        "inflight_max_partner_calls": max_calls,
        "inflight_jobs_per_s": rate,
        "inflight_ideal_jobs_per_s": ideal,
        "inflight_efficiency": rate / ideal,
        "inflight_rss_mb": peak["rss"] / 2**20,
        "inflight_concurrency": concurrency,
    }


def bench_ratelimit(quick: bool) -> dict[str, Any]:
    """Partner limit L, gateway configured to L, four workers, minutes of backlog: no 429s, >= 97% of L used."""
    rpm, minutes = (600, 1.0) if quick else (1200, 3.0)
    n = int(rpm * minutes)
    fleet = BenchFleet.start(rpm=rpm)
    try:
        fleet.sim_behaviour(requests_per_minute=rpm)
        out = asyncio.run(_ratelimit_run(fleet, n))
        stats = fleet.sim_stats("sim-openai")
    finally:
        fleet.close()
    calls = out.pop("call_times")
    span_min = (max(calls) - min(calls)) / 60
    out.update({
        "ratelimit_rpm": rpm,
        "ratelimit_jobs": n,
        "sim_rate_limited": stats["rate_limited"],
        "over_limit": stats["over_limit"],
        "utilization": (len(calls) - 1) / (span_min * rpm) if span_min > 0 else 0.0,
    })
    return out


async def _ratelimit_run(fleet: BenchFleet, n: int) -> dict[str, Any]:
    client, ids = await fedgate_preload(fleet, n)
    workers = fleet.start_workers(4, 250)
    redis_client = client.redis
    await fedgate_drain_keep(client, ids, timeout=n / 5 + 300)
    pipe = redis_client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["status", "history"])
    rows = await pipe.execute()
    await client.__aexit__()
    fleet.stop(workers)
    calls = [a["started_at"] for _, history in rows for a in json.loads(history or "[]") if a["outcome"] == "ok"]
    succeeded = sum(1 for status, _ in rows if status == "succeeded")
    return {"call_times": calls, "ratelimit_succeeded": succeeded}


async def fedgate_drain_keep(client: FedgateClient, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for i in ids if i in client.done_at) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: only {sum(1 for i in ids if i in client.done_at)}/{len(ids)} jobs finished")
        await asyncio.sleep(0.2)


def bench_failover(quick: bool) -> dict[str, Any]:
    """Primary answers 503 to everything, fallback healthy: all jobs succeed; added latency once the breaker opens."""
    n = 100 if quick else 300
    fleet = BenchFleet.start(failover=True)
    try:
        fleet.sim_behaviour("sim-openai", error_rate=1.0, error_status=503)
        out = asyncio.run(_failover_run(fleet, n))
    finally:
        fleet.close()
    return out


async def _failover_run(fleet: BenchFleet, n: int) -> dict[str, Any]:
    workers = fleet.start_workers(1, 1000, partners="bench,backup")
    async with FedgateClient(fleet) as client:
        await client.wait_done(await client.submit(partner="backup"), timeout=60)  # the worker is up
        opening = [await client.submit() for _ in range(30)]  # enough failures to open the breaker
        for job_id in opening:
            await client.wait_done(job_id, timeout=60)
        via_fallback: list[tuple[str, float]] = []
        direct: list[tuple[str, float]] = []
        for i in range(2 * n):
            partner = "bench" if i % 2 == 0 else "backup"
            started = time.perf_counter()
            job_id = await client.submit(partner=partner)
            done = await client.wait_done(job_id, timeout=60)
            (via_fallback if partner == "bench" else direct).append((job_id, (done - started) * 1000))
        all_ids = opening + [j for j, _ in via_fallback]
        pipe = client.redis.pipeline(transaction=False)
        for job_id in all_ids:
            pipe.hmget(keys.job(job_id), ["status", "answered_by"])
        rows = await pipe.execute()
    fleet.stop(workers)
    succeeded = sum(1 for status, by in rows if status == "succeeded" and by == "backup")
    p50_fallback = statistics.median(ms for _, ms in via_fallback)
    p50_direct = statistics.median(ms for _, ms in direct)
    return {
        "failover_jobs": len(all_ids),
        "success_rate": succeeded / len(all_ids),
        "fallback_roundtrip_p50_ms": p50_fallback,
        "direct_roundtrip_p50_ms": p50_direct,
        "added_latency_p50_ms": p50_fallback - p50_direct,
    }


MIXED_SAMPLE_GAP_S = 0.05


def bench_mixed(quick: bool) -> dict[str, Any]:
    """Interactive round trip p50 while a batch drains vs idle, with the fleet `fedgate up` starts: a worker for
    the interactive lane and a batch-lane worker at the lowest CPU priority (nice 19, SCHED_IDLE); zero-latency
    partner."""
    n_batch, n_rt = (2_000, 100) if quick else (10_000, 300)
    fleet = BenchFleet.start()
    try:
        fleet.start_workers(1, 1000, lanes="interactive")
        fleet.start_workers(1, 1000, lanes="batch", nice=BATCH_WORKER_NICE, idle_cpu=True)
        # The same sampling pattern idle and busy: a job, then a pause (an idle host that sleeps between jobs wakes
        # slower than one fed back to back, which would flatter the idle figure).
        idle = asyncio.run(fedgate_roundtrip(fleet, n_rt, gap_s=MIXED_SAMPLE_GAP_S))
        idle_back_to_back = asyncio.run(fedgate_roundtrip(fleet, n_rt))
        ping_paced = asyncio.run(redis_ping_p50(fleet, n_rt, gap_s=MIXED_SAMPLE_GAP_S))
        ping_back_to_back = asyncio.run(redis_ping_p50(fleet, n_rt))
        out = asyncio.run(_mixed_run(fleet, n_batch, n_rt))
    finally:
        fleet.close()
    idle_p50 = statistics.median(idle)
    back_to_back_p50 = statistics.median(idle_back_to_back)
    out.update({
        "interactive_idle_p50_ms": idle_p50,
        "interactive_slowdown": out["interactive_busy_p50_ms"] / idle_p50,
        # For comparison: an idle fleet fed jobs back to back never sleeps, so it answers faster than the paced
        # idle baseline; the busy figure against it is shown, not used as the target.
        "interactive_idle_back_to_back_p50_ms": back_to_back_p50,
        "interactive_slowdown_vs_back_to_back": out["interactive_busy_p50_ms"] / back_to_back_p50,
        # The same effect without fedgate: one Redis PING from this process, paced vs back to back. A job crosses
        # ~8 such process hops (client, Redis, worker threads, partner), each paying the host's wake-up cost.
        "redis_ping_paced_p50_ms": ping_paced,
        "redis_ping_back_to_back_p50_ms": ping_back_to_back,
    })
    return out


async def redis_ping_p50(fleet: BenchFleet, n: int, gap_s: float = 0.0) -> float:
    client = aioredis.Redis.from_url(fleet.redis.url)
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await client.ping()
        samples.append((time.perf_counter() - began) * 1000)
        if gap_s:
            await asyncio.sleep(gap_s)
    await client.aclose()
    return statistics.median(samples)


async def _mixed_run(fleet: BenchFleet, n_batch: int, n_rt: int) -> dict[str, Any]:
    """Create the batch through the Batch API's own path (file, then batch), follow its progress the way clients
    do (the batch's counters), and time interactive jobs spread over the whole drain."""
    from gateway_core.jobs.batches import BatchStore

    async with FedgateClient(fleet) as client:
        batches = BatchStore(client.producer.store, client.producer, max_file_bytes=64 * 2**20)
        text = "\n".join(json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
                                     "body": {"model": "bench", "messages": [{"role": "user", "content": f"b {i}"}]}})
                         for i in range(n_batch))
        started = time.perf_counter()
        info = await batches.create_file(client.tenant.name, "bench.jsonl", "batch", text.encode())
        batch_id = (await batches.create_batch(client.tenant, info.id, "/v1/chat/completions", "24h"))["id"]

        async def batch_done() -> int:
            view = await batches.get_batch(client.tenant.name, batch_id)
            assert view is not None
            counts = view["request_counts"]
            return int(counts["completed"]) + int(counts["failed"])

        while await batch_done() < min(200, n_batch // 10):  # the drain is under way
            await asyncio.sleep(0.01)
        samples: list[float] = []
        while len(samples) < n_rt and await batch_done() < n_batch * 0.95:
            began = time.perf_counter()
            done = await client.wait_done(await client.submit())
            samples.append((done - began) * 1000)
            await asyncio.sleep(MIXED_SAMPLE_GAP_S)  # spread the samples over the drain, not just its start
        during = await batch_done()
        deadline = time.monotonic() + 900
        while (finished := await batch_done()) < n_batch and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        drained_s = time.perf_counter() - started
    if len(samples) < 20:
        raise RuntimeError(f"bench: only {len(samples)} interactive samples fell inside the batch drain")
    return {
        "interactive_busy_p50_ms": statistics.median(samples),
        "interactive_busy_p99_ms": percentile(samples, 0.99),
        "interactive_samples": len(samples),
        "batch_jobs": n_batch,
        "batch_done_when_sampling_ended": during,
        "batch_jobs_per_s": finished / drained_s,
    }


# The partner a TTFT run streams from: a realistic wait before the first token, then a token every 20 ms.
TTFT_PARTNER = {"latency_ms": 200, "stream_token_delay_ms": 20, "stream_chunk_chars": 4}


def bench_ttft(quick: bool) -> dict[str, Any]:
    """Time to first token through the gateway (API + fleet + simulator, the official openai SDK with stream=True)
    against the same simulator directly, interleaved in the same run. Target: <= 1.5x direct + 5 ms (p50)."""
    n = 20 if quick else 60
    fleet = BenchFleet.start()
    try:
        fleet.sim_behaviour("sim-openai", **TTFT_PARTNER)
        api_port = free_port()
        fleet.env["FEDGATE_API_PORT"] = str(api_port)
        api_url = f"http://127.0.0.1:{api_port}"
        fleet.spawn("api", [sys.executable, "-m", "gateway_api.cli", "api"])
        wait_until(lambda: _http_ok(f"{api_url}/healthz"), 30, "api")
        fleet.start_workers(1, 100)
        return _ttft_run(fleet, api_url, n)
    finally:
        fleet.close()


def _ttft_run(fleet: BenchFleet, api_url: str, n: int) -> dict[str, Any]:
    import openai

    direct = openai.OpenAI(base_url=f"{fleet.sim_url}/sim-openai/v1", api_key="sk-bench", max_retries=0)
    gateway = openai.OpenAI(base_url=f"{api_url}/v1", api_key="bench-key", max_retries=0)

    def first_token_ms(client: openai.OpenAI, model: str, prompt: str) -> tuple[float, float]:
        """(ms to the first chunk carrying text, ms to the end of the stream)."""
        started = time.perf_counter()
        first: float | None = None
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                stream=True)
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        ended = time.perf_counter()
        if first is None:
            raise RuntimeError("bench: a stream carried no text")
        return (first - started) * 1000, (ended - started) * 1000

    for i in range(5):  # warm: connections, the worker's first job, the redactor
        first_token_ms(direct, "sim-gpt", f"warm {i}")
        first_token_ms(gateway, "bench", f"warm {i}")
    direct_ttft, gateway_ttft, direct_total, gateway_total = [], [], [], []
    for i in range(n):
        ttft, total = first_token_ms(direct, "sim-gpt", f"time to first token {i}")
        direct_ttft.append(ttft)
        direct_total.append(total)
        ttft, total = first_token_ms(gateway, "bench", f"time to first token {i}")
        gateway_ttft.append(ttft)
        gateway_total.append(total)
    direct_p50, gateway_p50 = statistics.median(direct_ttft), statistics.median(gateway_ttft)
    return {
        "ttft_direct_p50_ms": direct_p50,
        "ttft_gateway_p50_ms": gateway_p50,
        "ttft_direct_p90_ms": percentile(direct_ttft, 0.9),
        "ttft_gateway_p90_ms": percentile(gateway_ttft, 0.9),
        "ttft_ratio": gateway_p50 / direct_p50,
        "ttft_added_p50_ms": gateway_p50 - direct_p50,
        # <= 1.0 when the gateway's p50 is within 1.5x the direct p50 plus 5 ms
        "ttft_vs_target": gateway_p50 / (1.5 * direct_p50 + 5),
        "stream_total_direct_p50_ms": statistics.median(direct_total),
        "stream_total_gateway_p50_ms": statistics.median(gateway_total),
        "ttft_samples": n,
    }


def bench_redaction(quick: bool) -> dict[str, Any]:
    """Our redactor vs stock Presidio in this process, side by side: speed on the same ~1 KB prompts, recall per
    entity type and changes to PII-free text on the independent corpus (presidio-evaluator's public templates, every
    card network's ranges, the phone formats people write), and recall on the project's own corpus as a regression
    line (devtools/redaction/bench.py)."""
    from devtools.redaction.bench import run_redaction_bench

    if quick:
        return run_redaction_bench(n_prompts=100, n_pii=1000, n_pii_free=1000)
    return run_redaction_bench()


TARGETS = {
    "roundtrip_ratio": ("<=", 2.0),
    "compressed_vs_uncompressed_roundtrip": ("<=", 1.05),
    "throughput_ratio": (">=", 0.5),
    "inflight_efficiency": (">=", 0.9),
    "inflight_rss_mb": ("<=", 400),
    "inflight_max_partner_calls": ("<=", 1000),
    "sim_rate_limited": ("<=", 0),
    "over_limit": ("<=", 0),
    "utilization": (">=", 0.97),
    "success_rate": (">=", 1.0),
    "added_latency_p50_ms": ("<=", 50),
    "redaction_p50_ms": ("<=", 1.5),
    "redaction_recall_min": (">=", 0.995),
    "redaction_types_below_presidio": ("<=", 0),
    "redaction_pii_free_changed_pct": ("<=", 0.5),
    "interactive_slowdown": ("<=", 1.5),
    "ttft_vs_target": ("<=", 1.0),
}


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fedgate bench")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("met")
    for name, value in results.items():
        target = TARGETS.get(name)
        shown = f"{value:.3f}" if isinstance(value, float) else json.dumps(value)
        if target:
            op, bound = target
            met = value <= bound if op == "<=" else value >= bound
            table.add_row(name, shown, f"{op} {bound}", "yes" if met else "NO")
        else:
            table.add_row(name, shown, "", "")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="smaller job counts")
    parser.add_argument("--ratelimit", action="store_true", help="distributed rate limits (issue 4)")
    parser.add_argument("--failover", action="store_true", help="breaker and fallback (issue 4)")
    parser.add_argument("--core", action="store_true", help="round trip, throughput, in flight (default)")
    parser.add_argument("--redaction", action="store_true", help="redaction speed and recall vs stock Presidio")
    parser.add_argument("--mixed", action="store_true", help="interactive round trip while a batch drains (issue 6)")
    parser.add_argument("--ttft", action="store_true", help="time to first token, gateway vs direct (issue 16)")
    args = parser.parse_args()
    names = ("core", "ratelimit", "failover", "redaction", "mixed", "ttft")
    chosen = [name for name in names if getattr(args, name)] or ["core"]
    runners = {"core": bench_core, "ratelimit": bench_ratelimit, "failover": bench_failover,
               "redaction": bench_redaction, "mixed": bench_mixed, "ttft": bench_ttft}
    results: dict[str, Any] = {}
    for name in chosen:
        results.update(runners[name](args.quick))
    results = {k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
