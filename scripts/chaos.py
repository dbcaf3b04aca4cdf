"""fedgate under faults: jobs through the HTTP API while workers are SIGKILLed mid-call, Redis is SIGKILLed and
restarted, and a partner fails; then what became of every accepted job.

  scripts/chaos                   1,000 jobs; 3 worker kills, 2 Redis restarts, one partner outage
  scripts/chaos --jobs 150 --worker-kills 1 --redis-restarts 1     (the size tests/integration/test_chaos.py runs)
  scripts/chaos --json            one JSON object instead of the table

The run starts its own fleet under a temporary home: an embedded Redis (AOF, appendfsync everysec), the partner
simulator (recording every request body), the API and 3 workers. Prompts carry seeded personal data (e-mail
addresses, phone, card and social security numbers) and a marker naming the job, so the partner's record tells
how often each job was sent. The faults are paced by timers over the submission window; a refused submission (503
while Redis is down) is retried as a new submission, as a client would.

Figures and targets (exit status 1 when one is missed, 2 when the run itself failed):
- lost: accepted (202) but the job's record is gone. Target 0.
- stuck: not final (succeeded, dead-lettered, cancelled) one visibility timeout after the last fault ended (a
  killed worker's replacement is ready, Redis answers again, the partner is healthy again). Target 0.
- duplicated partner calls: calls the partner received for a job beyond those the job's own history records (each
  retry and fallback is a recorded call; a call made by a run that died, or whose result could not be kept, is
  not), as a % of accepted jobs. Target <= 1 %.
- PII hits: seeded values found in Redis (every key and value, and the AOF files), in the log of every process, or
  in what the partner received. Target 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway_core.crypto import PayloadCipher  # noqa: E402
from gateway_core.fleet import keys  # noqa: E402
from gateway_core.fleet.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway_core.jobs.models import NOT_CALLS  # noqa: E402
from partner_simulator import SimulatorConfig  # noqa: E402

PRIMARY, BACKUP = "chaos-primary", "chaos-backup"
SIM_PRIMARY, SIM_BACKUP = "sim-openai", "sim-anthropic"
TENANT_KEY = "chaos-tenant-key"
FINAL = {"succeeded", "dead_lettered", "cancelled", "failed"}
MARKER = re.compile(r"chaosref-[0-9a-f]{12}")
DUPLICATES_TARGET = 0.01


# --- options ---------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    jobs: int = 1000
    rate: float = 20.0  # submissions per second
    workers: int = 3
    concurrency: int = 50
    worker_kills: int = 3
    redis_restarts: int = 2
    outage_s: float = 8.0
    redis_down_s: float = 1.5
    visibility_timeout_s: int = 30
    latency_ms: float = 150.0
    jitter_ms: float = 300.0
    seed: int = 14
    keep: bool = False


# --- seeded jobs --------------------------------------------------------------------------------------------------


FIRST = ["olivia", "noah", "amelia", "liam", "maya", "ethan", "sofia", "lucas", "chloe", "mateo", "aria", "levi"]
LAST = ["garcia", "smith", "nguyen", "okafor", "kowalski", "rossi", "tanaka", "haddad", "silva", "murphy"]


@dataclass
class Seeded:
    """One job's prompt, and the personal data seeded in it (as written, and as a leak would be searched)."""

    index: int
    emails: list[str]
    numbers: list[str]  # as written in the prompt
    text_template: str

    def prompt(self, marker: str) -> str:
        return self.text_template.replace("{marker}", marker)

    def needles(self) -> list[str]:
        """What a leak of this job's data looks like after normalisation: e-mails lower-cased, numbers as digits."""
        return [e.lower() for e in self.emails] + [re.sub(r"\D", "", n) for n in self.numbers]


def _luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i:i + 4] for i in range(0, 16, 4))


def seeded_jobs(count: int, seed: int) -> list[Seeded]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        email = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randrange(10**6):06d}@example.org"
        phone = f"+1 415 555 {rng.randrange(10**4):04d}"
        card = _luhn_card(rng)
        ssn = f"{rng.randrange(100, 665):03d}-{rng.randrange(10, 99):02d}-{rng.randrange(1000, 9999):04d}"
        text = (f"[{{marker}}] Customer {email} called from {phone} about the card {card}; SSN {ssn}. "
                "Draft a short, polite reply.")
        out.append(Seeded(index, [email], [phone, card, ssn], text))
    return out


# --- the fleet -----------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"chaos: timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def fleet_config(sim_url: str) -> dict[str, Any]:
    policy = {"on_doubt": "redact"}
    return {
        "partners": {
            PRIMARY: {"adapter": "openai", "base_url": f"{sim_url}/{SIM_PRIMARY}/v1", "model": "sim-gpt",
                      "api_key": "sk-chaos-primary", "timeout_s": 4, "policy": policy,
                      "retry": {"max_attempts": 3, "base_delay_s": 0.2, "max_delay_s": 2},
                      "breaker": {"window_s": 10, "min_calls": 10, "failure_rate": 0.5, "cooldown_s": 4},
                      "fallback": [BACKUP]},
            BACKUP: {"adapter": "anthropic", "base_url": f"{sim_url}/{SIM_BACKUP}", "model": "sim-claude",
                     "api_key": "sk-chaos-backup", "timeout_s": 4, "policy": policy,
                     "retry": {"max_attempts": 4, "base_delay_s": 0.2, "max_delay_s": 2}},
        },
        "tenants": {"chaos": {"api_key": TENANT_KEY}},
    }


@dataclass
class Worker:
    slot: int
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    generation: int = 0


@dataclass
class Fleet:
    home: Path
    options: Options
    server: EmbeddedRedis
    env: dict[str, str]
    sim_url: str
    api_url: str
    cipher: PayloadCipher
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    @classmethod
    def start(cls, options: Options) -> Fleet:
        home = Path(tempfile.mkdtemp(prefix="fedgate-chaos-"))
        server = EmbeddedRedis(home / "redis", free_port()).start()
        sim_port, api_port = free_port(), free_port()
        sim_url, api_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
        (home / "fedgate.yaml").write_text(yaml.safe_dump(fleet_config(sim_url)))
        behaviour = {"latency_ms": options.latency_ms, "latency_jitter_ms": options.jitter_ms, "seed": options.seed}
        sim_config = SimulatorConfig.demo()
        for partner in sim_config.partners.values():
            partner.behaviour = partner.behaviour.patched(behaviour)
        (home / "simulator.json").write_text(sim_config.model_copy(update={"record_bodies": True}).model_dump_json())
        key = Fernet.generate_key()
        env = dict(os.environ)
        env.update({
            "FEDGATE_HOME": str(home),
            "FEDGATE_REDIS_URL": server.url,
            "FEDGATE_CONFIG": str(home / "fedgate.yaml"),
            "FEDGATE_ENCRYPTION_KEYS": key.decode(),
            "FEDGATE_SIMULATOR_PORT": str(sim_port),
            "FEDGATE_SIM_CONFIG": str(home / "simulator.json"),
            "FEDGATE_API_PORT": str(api_port),
            "FEDGATE_VISIBILITY_TIMEOUT_S": str(options.visibility_timeout_s),
            "PYTHONPATH": str(ROOT),
        })
        fleet = cls(home, options, server, env, sim_url, api_url, PayloadCipher([key]))
        try:
            fleet.spawn("simulator", "simulate")
            fleet.spawn("api", "api")
            wait_until(lambda: http_ok(f"{sim_url}/healthz"), 60, "the simulator")
            wait_until(lambda: http_ok(f"{api_url}/healthz"), 60, "the API")
            fleet.workers = [Worker(slot, free_port()) for slot in range(options.workers)]
            for worker in fleet.workers:
                fleet.start_worker(worker)
            for worker in fleet.workers:
                fleet.wait_ready(worker)
        except BaseException:
            fleet.close()
            raise
        return fleet

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "gateway_api.cli", *args], env=env or self.env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def start_worker(self, worker: Worker) -> None:
        worker.generation += 1
        name = f"worker-{worker.slot}-{worker.generation}"
        worker.log = self.home / f"{name}.log"
        env = dict(self.env, FEDGATE_WORKER_METRICS_PORT=str(worker.metrics_port))
        worker.process = self.spawn(name, "worker", "--partners", f"{PRIMARY},{BACKUP}", "--lanes", "interactive",
                                    "--concurrency", str(self.options.concurrency), env=env)

    def wait_ready(self, worker: Worker, timeout: float = 120) -> None:
        assert worker.log is not None and worker.process is not None
        log, process = worker.log, worker.process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"chaos: worker {worker.slot} exited at start; see {log}")
            return "ready." in log.read_text(errors="replace")

        wait_until(ready, timeout, f"worker {worker.slot} to be ready", interval=0.2)

    def calls_in_flight(self, worker: Worker) -> int:
        try:
            text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=1).text
        except httpx.HTTPError:
            return 0
        found = re.findall(r"^fedgate_partner_calls_in_flight\{[^}]*\} ([0-9.e+-]+)$", text, re.MULTILINE)
        return int(sum(float(value) for value in found))

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.sim_url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.server.stop()


# --- faults --------------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at_s: float  # since the first submission
    ended_at_s: float = 0.0
    detail: str = ""


class Faults:
    """The fault schedule, paced by timers over the submission window (load generation, not synchronisation)."""

    def __init__(self, fleet: Fleet, window_s: float, started: float) -> None:
        self.fleet = fleet
        self.window_s = window_s
        self.started = started
        self.done: list[Fault] = []
        self.next_worker = 0

    def now(self) -> float:
        return time.monotonic() - self.started

    def plan(self) -> list[tuple[float, str]]:
        """(seconds into the window, kind): the faults evenly spread, the kinds taking turns."""
        options = self.fleet.options
        left = {"worker": options.worker_kills, "redis": options.redis_restarts, "outage": int(options.outage_s > 0)}
        order: list[str] = []
        while any(left.values()):
            for kind in ("worker", "redis", "outage"):
                if left[kind]:
                    order.append(kind)
                    left[kind] -= 1
        return [((i + 1) / (len(order) + 1) * self.window_s, kind) for i, kind in enumerate(order)]

    async def run(self) -> None:
        await asyncio.gather(*(self._at(offset, kind) for offset, kind in self.plan()))

    async def _at(self, offset: float, kind: str) -> None:
        await asyncio.sleep(max(0.0, offset - self.now()))
        action = {"worker": self.kill_worker, "redis": self.restart_redis, "outage": self.partner_outage}[kind]
        fault = await action()
        fault.ended_at_s = self.now()
        self.done.append(fault)

    async def kill_worker(self) -> Fault:
        fleet = self.fleet
        worker = fleet.workers[self.next_worker % len(fleet.workers)]
        self.next_worker += 1
        # Mid-call: wait (a little) for the worker to have calls in flight.
        deadline = time.monotonic() + 5
        in_flight = 0
        while time.monotonic() < deadline:
            in_flight = await asyncio.to_thread(fleet.calls_in_flight, worker)
            if in_flight:
                break
            await asyncio.sleep(0.05)
        assert worker.process is not None
        fault = Fault("worker SIGKILL", self.now(), detail=f"worker {worker.slot}, {in_flight} call(s) in flight")
        worker.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker.process.wait)
        await asyncio.sleep(1.0)  # a supervisor's restart delay
        fleet.start_worker(worker)
        await asyncio.to_thread(fleet.wait_ready, worker)
        return fault

    async def restart_redis(self) -> Fault:
        server = self.fleet.server
        assert server.process is not None
        fault = Fault("redis SIGKILL + restart", self.now())
        server.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.process.wait)
        await asyncio.sleep(self.fleet.options.redis_down_s)
        started = time.monotonic()
        await asyncio.to_thread(server.start, 60.0)  # same port, same data directory: the AOF is replayed
        fault.detail = f"down {self.fleet.options.redis_down_s:g} s, AOF replayed in {time.monotonic() - started:.2f} s"
        return fault

    async def partner_outage(self) -> Fault:
        fleet, seconds = self.fleet, self.fleet.options.outage_s
        fault = Fault(f"{SIM_PRIMARY} outage", self.now(),
                      detail=f"{seconds / 2:g} s of 503s, then {seconds / 2:g} s of timeouts; fallback {BACKUP}")
        path = f"/_sim/partners/{SIM_PRIMARY}"
        await asyncio.to_thread(fleet.sim, "PUT", path, json={"error_rate": 1.0, "error_status": 503})
        await asyncio.sleep(seconds / 2)
        await asyncio.to_thread(fleet.sim, "PUT", path, json={"error_rate": 0.0, "timeout_rate": 1.0, "hang_s": 60})
        await asyncio.sleep(seconds / 2)
        await asyncio.to_thread(fleet.sim, "PUT", path, json={"timeout_rate": 0.0})
        return fault


# --- load ----------------------------------------------------------------------------------------------------------


@dataclass
class Submissions:
    accepted: dict[str, int] = field(default_factory=dict)  # job id -> seeded index
    markers: dict[str, str | None] = field(default_factory=dict)  # marker -> job id (None: refused)
    marker_of: dict[str, str] = field(default_factory=dict)  # job id -> the marker of its accepted submission
    refused: Counter[str] = field(default_factory=Counter)  # status or error -> submissions refused (then retried)
    given_up: int = 0


async def submit_all(fleet: Fleet, jobs: list[Seeded], started: float, rng: random.Random) -> Submissions:
    out = Submissions()
    rate = fleet.options.rate
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"authorization": f"Bearer {TENANT_KEY}"}
    async with httpx.AsyncClient(base_url=fleet.api_url, headers=headers, timeout=30, limits=limits) as client:

        async def one(job: Seeded) -> None:
            await asyncio.sleep(max(0.0, started + job.index / rate - time.monotonic()))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                marker = f"chaosref-{rng.getrandbits(48):012x}"
                out.markers[marker] = None
                try:
                    response = await client.post("/v1/jobs", json={"partner": PRIMARY, "prompt": job.prompt(marker)})
                except httpx.HTTPError as exc:
                    out.refused[exc.__class__.__name__] += 1
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code == 202:
                    job_id = str(response.json()["id"])
                    out.accepted[job_id] = job.index
                    out.markers[marker] = job_id
                    out.marker_of[job_id] = marker
                    return
                out.refused[f"HTTP {response.status_code}"] += 1
                if response.status_code not in (429, 502, 503, 504):
                    break
                await asyncio.sleep(0.5)
            out.given_up += 1

        await asyncio.gather(*(one(job) for job in jobs))
    return out


# --- measuring -----------------------------------------------------------------------------------------------------


def read_jobs(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, dict[str, str] | None]:
    ids = list(job_ids)
    out: dict[str, dict[str, str] | None] = {}
    fields = ["status", "history", "output", "partner", "answered_by", "attempt", "finished_at"]
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        pipe = client.pipeline(transaction=False)
        for job_id in part:
            pipe.hmget(keys.job(job_id), fields)
        for job_id, row in zip(part, pipe.execute(), strict=True):
            values = [v.decode() if isinstance(v, bytes) else v for v in row]
            out[job_id] = None if values[0] is None else dict(zip(fields, values, strict=True))
    return out


def wait_final(fleet: Fleet, job_ids: list[str], deadline: float) -> dict[str, dict[str, str] | None]:
    """Poll the job records until every one is final or the deadline passes (a measurement with a deadline)."""
    while True:
        try:
            with contextlib.closing(fleet.client()) as client:
                jobs = read_jobs(client, job_ids)
        except redis.RedisError:
            jobs = {}
        if jobs and all(job is None or job["status"] in FINAL for job in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
NUMBER = re.compile(rb"\+?\d[\d \-]{6,}\d")


class PiiScanner:
    """Finds seeded values in text: e-mail-shaped tokens compared whole, number-shaped ones as digits (any window of
    a seeded number's length), so a search costs one pass over the text, not one per seeded value."""

    def __init__(self, needles: Iterable[str]) -> None:
        self.emails = {n for n in needles if "@" in n}
        self.numbers = {n for n in needles if "@" not in n}
        self.lengths = sorted({len(n) for n in self.numbers})

    def hits(self, blob: bytes) -> set[str]:
        found = {m.decode(errors="replace").lower() for m in EMAIL.findall(blob)} & self.emails
        for match in NUMBER.findall(blob):
            digits = re.sub(rb"\D", b"", match).decode()
            for length in self.lengths:
                for i in range(len(digits) - length + 1):
                    if digits[i:i + length] in self.numbers:
                        found.add(digits[i:i + length])
        return found


def redis_contents(client: redis.Redis) -> bytes:
    """Every key and every value in the database, as one text."""
    parts: list[bytes] = []
    names = list(client.scan_iter(count=1000))
    for start in range(0, len(names), 500):
        part = names[start:start + 500]
        pipe = client.pipeline(transaction=False)
        for name in part:
            pipe.type(name)
        types = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for name, kind in zip(part, types, strict=True):
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "string":
                pipe.get(name)
            elif kind == "hash":
                pipe.hgetall(name)
            elif kind == "list":
                pipe.lrange(name, 0, -1)
            elif kind == "set":
                pipe.smembers(name)
            elif kind == "zset":
                pipe.zrange(name, 0, -1)
            elif kind == "stream":
                pipe.xrange(name)
            else:
                pipe.echo(b"")
        for name, value in zip(part, pipe.execute(), strict=True):
            parts.append(name)
            parts.append(repr(value).encode())
    return b"\n".join(parts)


def sim_bodies(fleet: Fleet) -> dict[str, list[str]]:
    return {name: fleet.sim("GET", f"/_sim/requests/{name}")["bodies"] for name in (SIM_PRIMARY, SIM_BACKUP)}


def history_calls(history: list[dict[str, Any]]) -> int:
    return sum(1 for entry in history if entry.get("outcome") not in NOT_CALLS)


def measure(fleet: Fleet, jobs: list[Seeded], subs: Submissions, faults: list[Fault], final_deadline: float,
            deadline_s: float, started_wall: float) -> dict[str, Any]:
    options = fleet.options
    accepted = list(subs.accepted)
    read = wait_final(fleet, accepted, final_deadline)
    states = {job_id: state for job_id, state in read.items() if state is not None}
    stuck_ids = [j for j in accepted if j in states and states[j]["status"] not in FINAL]
    lost_ids = [j for j in accepted if j not in states]
    late: dict[str, Any] = {}
    if stuck_ids:  # how late: wait up to two more visibility timeouts, for the diagnosis
        later = wait_final(fleet, stuck_ids, time.monotonic() + 2 * options.visibility_timeout_s)
        late = {j: (later.get(j) or {}).get("status") for j in stuck_ids}
    statuses = Counter(state["status"] for state in states.values())
    finished = [float(state["finished_at"]) for state in states.values() if state.get("finished_at")]
    last_final_s = max(finished) - started_wall if finished else None

    # calls: what the partner received per job, against what the job's history records
    bodies = sim_bodies(fleet)
    received: Counter[str] = Counter()
    orphan_calls = 0
    for texts in bodies.values():
        for text in texts:
            for marker in set(MARKER.findall(text)):
                job_id = subs.markers.get(marker)
                if job_id is None:
                    orphan_calls += 1
                else:
                    received[job_id] += 1
    duplicated, unrecorded, wrong_outputs, swept, redelivered = 0, 0, 0, 0, 0
    duplicated_jobs: list[str] = []
    for job_id in accepted:
        state = states.get(job_id)
        if not state:
            continue
        history = json.loads(state["history"] or "[]")
        recorded = history_calls(history)
        swept += sum(1 for entry in history if entry.get("outcome") == "swept")
        redelivered += sum(1 for entry in history if entry.get("outcome") == "redelivered")
        extra = received[job_id] - recorded
        if extra > 0:
            duplicated += extra
            duplicated_jobs.append(job_id)
        elif extra < 0:
            unrecorded -= extra
        if state["status"] == "succeeded":
            output = fleet.cipher.decrypt(state["output"].encode()) if state.get("output") else ""
            if not output.endswith(jobs[subs.accepted[job_id]].prompt(subs.marker_of[job_id])):
                wrong_outputs += 1
    total_received = sum(len(texts) for texts in bodies.values())

    # PII: Redis (keys, values, AOF files), every process's log, what the partner received
    scanner = PiiScanner(needle for job in jobs for needle in job.needles())
    with contextlib.closing(fleet.client()) as client:
        places: dict[str, bytes] = {"redis keys and values": redis_contents(client)}
    places["redis AOF"] = b"\n".join(p.read_bytes() for p in sorted((fleet.home / "redis").rglob("*"))
                                     if p.is_file() and p.name != "redis.log")
    for log in [*sorted(fleet.home.glob("*.log")), fleet.home / "redis" / "redis.log"]:
        if log.exists():
            places[f"log {log.name}"] = log.read_bytes()
    places["partner requests"] = "\n".join(t for texts in bodies.values() for t in texts).encode()
    pii = {place: sorted(scanner.hits(blob)) for place, blob in places.items()}
    pii_hits = sum(len(found) for found in pii.values())

    n = len(accepted)
    duplicated_pct = 100.0 * duplicated / n if n else 0.0
    targets: dict[str, dict[str, Any]] = {
        "lost": {"value": len(lost_ids), "target": 0, "met": not lost_ids},
        "stuck": {"value": len(stuck_ids), "target": 0, "met": not stuck_ids},
        "duplicated_calls_pct": {"value": round(duplicated_pct, 3), "target": 100 * DUPLICATES_TARGET,
                                 "met": duplicated <= DUPLICATES_TARGET * n},
        "pii_hits": {"value": pii_hits, "target": 0, "met": pii_hits == 0},
    }
    return {
        "options": asdict(options),
        "jobs": len(jobs),
        "accepted": n,
        "refused_submissions": dict(subs.refused),
        "given_up": subs.given_up,
        "succeeded": statuses.get("succeeded", 0),
        "dead_lettered": statuses.get("dead_lettered", 0),
        "cancelled": statuses.get("cancelled", 0),
        "lost": len(lost_ids),
        "stuck": len(stuck_ids),
        "stuck_deadline_s": round(deadline_s, 1),
        "last_final_s": None if last_final_s is None else round(last_final_s, 1),
        "stuck_jobs": [{"id": j, "status": states[j]["status"], "later": late.get(j),
                        "history": [e.get("outcome") for e in json.loads(states[j]["history"] or "[]")]}
                       for j in stuck_ids[:20]],
        "lost_jobs": lost_ids[:20],
        "partner_calls": total_received,
        "partner_calls_by_partner": {name: len(texts) for name, texts in bodies.items()},
        "calls_beyond_one_per_job": sum(max(0, received[j] - 1) for j in accepted),
        "duplicated_calls": duplicated,
        "duplicated_calls_pct": round(duplicated_pct, 3),
        "duplicated_jobs": duplicated_jobs[:50],
        "calls_in_history_not_received": unrecorded,
        "calls_for_refused_submissions": orphan_calls,
        "recorded_bodies_capped": any(len(texts) >= 10_000 for texts in bodies.values()),
        "redelivered_runs": redelivered,
        "swept": swept,
        "wrong_outputs": wrong_outputs,
        "pii_hits": pii_hits,
        "pii_by_place": {place: len(found) for place, found in pii.items()},
        "pii_places_searched": len(places),
        "faults": [asdict(f) for f in faults],
        "targets": targets,
        "passed": all(t["met"] for t in targets.values()),
        "home": str(fleet.home) if options.keep else None,
    }


# --- the run -------------------------------------------------------------------------------------------------------


async def drive(fleet: Fleet, jobs: list[Seeded]) -> tuple[Submissions, list[Fault], float, float]:
    window_s = len(jobs) / fleet.options.rate
    started, started_wall = time.monotonic(), time.time()
    faults = Faults(fleet, window_s, started)
    subs, _ = await asyncio.gather(submit_all(fleet, jobs, started, random.Random(fleet.options.seed + 1)),
                                   faults.run())
    return subs, sorted(faults.done, key=lambda f: f.at_s), started, started_wall


def run(options: Options) -> dict[str, Any]:
    jobs = seeded_jobs(options.jobs, options.seed)
    fleet = Fleet.start(options)
    try:
        subs, faults, started, started_wall = asyncio.run(drive(fleet, jobs))
        last_fault_end = max([f.ended_at_s for f in faults], default=0.0)
        deadline_s = last_fault_end + options.visibility_timeout_s
        report = measure(fleet, jobs, subs, faults, started + deadline_s, deadline_s, started_wall)
        report["submission_window_s"] = round(len(jobs) / options.rate, 1)
        report["last_fault_ended_s"] = round(last_fault_end, 1)
        return report
    finally:
        fleet.close()
        if not options.keep:
            import shutil

            shutil.rmtree(fleet.home, ignore_errors=True)


def table(report: dict[str, Any]) -> str:
    o = report["options"]
    t = report["targets"]

    def mark(name: str) -> str:
        return "ok" if t[name]["met"] else "MISSED"

    lines = [
        f"fedgate chaos: {report['jobs']} jobs at {o['rate']:g}/s through the HTTP API, {o['workers']} workers "
        f"(concurrency {o['concurrency']}), visibility timeout {o['visibility_timeout_s']} s, seed {o['seed']}",
        "faults:",
        *(f"  {f['at_s']:6.1f} s  {f['kind']:<26} {f['detail']} (over at {f['ended_at_s']:.1f} s)"
          for f in report["faults"]),
        "",
        f"accepted               {report['accepted']:>6}   (refused and retried: "
        f"{sum(report['refused_submissions'].values())} {report['refused_submissions'] or ''}; given up: "
        f"{report['given_up']})",
        f"succeeded              {report['succeeded']:>6}",
        f"dead-lettered          {report['dead_lettered']:>6}",
        f"lost                   {report['lost']:>6}   target 0          {mark('lost')}",
        f"stuck                  {report['stuck']:>6}   target 0          {mark('stuck')}   (not final at "
        f"{report['stuck_deadline_s']} s: last fault over at {report['last_fault_ended_s']} s + one visibility "
        f"timeout; the last job was final at {report['last_final_s']} s)",
        f"duplicated calls       {report['duplicated_calls']:>6}   {report['duplicated_calls_pct']:.2f} % of jobs, "
        f"target <= 1 %   {mark('duplicated_calls_pct')}",
        f"PII hits               {report['pii_hits']:>6}   target 0          {mark('pii_hits')}   "
        f"({report['pii_places_searched']} places: Redis keys and values, AOF, every log, partner requests)",
        "",
        f"partner calls          {report['partner_calls']:>6}   {report['partner_calls_by_partner']}; beyond one per "
        f"job: {report['calls_beyond_one_per_job']} (retries and fallbacks in the outage included)",
        f"redelivered runs       {report['redelivered_runs']:>6}   swept jobs {report['swept']}; wrong outputs "
        f"{report['wrong_outputs']}; calls for refused submissions {report['calls_for_refused_submissions']}",
    ]
    for job in report["stuck_jobs"]:
        lines.append(f"  stuck: {job['id']} {job['status']} (later: {job['later']}) history {job['history']}")
    for job_id in report["lost_jobs"]:
        lines.append(f"  lost: {job_id}")
    lines.append("PASSED" if report["passed"] else "FAILED: a target was missed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Options()
    parser.add_argument("--jobs", type=int, default=defaults.jobs, help="jobs to send (default %(default)s)")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="submissions per second")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="calls in flight per worker")
    parser.add_argument("--worker-kills", type=int, default=defaults.worker_kills)
    parser.add_argument("--redis-restarts", type=int, default=defaults.redis_restarts)
    parser.add_argument("--outage-s", type=float, default=defaults.outage_s, help="partner outage (0: none)")
    parser.add_argument("--visibility-timeout-s", type=int, default=defaults.visibility_timeout_s)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--keep", action="store_true", help="keep the fleet's home (logs, AOF) and print it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    options = Options(jobs=args.jobs, rate=args.rate, workers=args.workers, concurrency=args.concurrency,
                      worker_kills=args.worker_kills, redis_restarts=args.redis_restarts, outage_s=args.outage_s,
                      visibility_timeout_s=args.visibility_timeout_s, seed=args.seed, keep=args.keep)
    if options.jobs < 1 or options.workers < 1 or options.rate <= 0:
        parser.error("--jobs, --workers and --rate must be positive")
    try:
        report = run(options)
    except (RuntimeError, OSError, redis.RedisError, httpx.HTTPError) as exc:
        print(f"chaos: the run could not be made: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
