"""The sweeper (gateway_core.jobs.sweeper): a job whose message is gone is found and sent again, exactly once; a job
whose message is anywhere (its queue, an unacknowledged delivery, the delay queue) is never touched, unless it runs
on a worker whose heartbeat is gone.

The first tests drive a Sweeper by hand on a database of their own, with jobs submitted through the real producer
(Celery's own messages on the real queues) and messages taken away as a fault would (LREM from the queue, HDEL from
kombu's unacked hash). The last ones run real workers on the shared fleet: a job whose message is deleted is swept
and finishes; one whose delivery merely waits for the visibility timeout is redelivered, not swept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core.config import GatewayConfig, PartnerConfig, TenantConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys
from gateway_core.fleet.fleet_state import UNACKED
from gateway_core.jobs import run_owners
from gateway_core.jobs.models import Attempt, JobStatus, JobSubmission
from gateway_core.jobs.routing import decide
from gateway_core.jobs.store import JobStore, delayed_member
from gateway_core.jobs.submission import JobProducer
from gateway_core.jobs.sweeper import ABANDONED, PAGE, SWEPT, Sweeper, default_timings, message_id
from gateway_core.partners.adapters.base import Outcome, PartnerResponse
from gateway_core.settings import Settings
from tests.helpers import FleetEnv, Proc, finish_job, submit_job, wait_for
from workers.celery_app import make_celery
from workers.enqueue import CeleryEnqueuer, celery_task_id

T = TypeVar("T")
PARTNER = "sweep-partner"  # no worker reads this test's database: messages stay where the test puts them
QUEUE = keys.partner_queue(PARTNER)


class Env:
    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.redis = aioredis.Redis.from_url(url, decode_responses=True)
        self.config = GatewayConfig(
            partners={PARTNER: PartnerConfig(name=PARTNER, adapter="openai", base_url="http://127.0.0.1:9/v1",
                                             model="m")},
            tenants={"sweep-tenant": TenantConfig(name="sweep-tenant", api_key="sweep-key")},
        )
        settings = Settings(redis_url=url)
        self.store = JobStore(self.redis, PayloadCipher([Fernet.generate_key()]), 3600)
        self.producer = JobProducer(self.store, self.config, settings, CeleryEnqueuer(make_celery(settings)))

    def run(self, factory: Callable[[], Awaitable[T]]) -> T:
        return self.loop.run_until_complete(factory())

    def sweeper(self, **timings: float) -> Sweeper:
        """A sweeper that looks at every job at once (a negative grace period) and re-sends on the second sighting,
        unless told otherwise."""
        options: dict[str, Any] = {"grace_s": -1, "confirm_s": 0, "running_confirm_s": 0, **timings}
        return Sweeper(self.redis, visibility_timeout_s=30, **options)

    def submit(self, prompt: str = "sweep me") -> str:
        async def go() -> str:
            record = await self.producer.submit(self.config.tenants["sweep-tenant"],
                                                JobSubmission(partner=PARTNER, prompt=prompt))
            return record.id

        return self.run(go)

    def job(self, job_id: str) -> dict[str, str]:
        return self.run(lambda: self.redis.hgetall(keys.job(job_id)))  # type: ignore[arg-type,return-value]

    def history(self, job_id: str) -> list[dict[str, Any]]:
        return json.loads(self.job(job_id)["history"])  # type: ignore[no-any-return]

    def queued_message(self, job_id: str, attempt: int = 1) -> str:
        messages = cast(list[str], self.run(lambda: self.redis.lrange(QUEUE, 0, -1)))  # type: ignore[arg-type,return-value]
        return next(m for m in messages if json.loads(m)["headers"]["id"] == celery_task_id(job_id, attempt))

    def take_message(self, job_id: str) -> None:
        """The fault: the job's message leaves its queue and goes nowhere."""
        message = self.queued_message(job_id)
        assert self.run(lambda: self.redis.lrem(QUEUE, 1, message)) == 1

    def deliver(self, job_id: str) -> str:
        """What kombu does when a worker takes the message: out of the queue, into the unacked hash. Returns the
        delivery tag."""
        message = self.queued_message(job_id)
        tag = json.loads(message)["properties"]["delivery_tag"]

        async def go() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lrem(QUEUE, 1, message)
                pipe.zadd(f"{UNACKED}_index", {tag: 1.0})
                pipe.hset(UNACKED, tag, json.dumps([json.loads(message), "", QUEUE]))
                await pipe.execute()

        self.run(go)
        return tag

    def claim(self, job_id: str) -> str:
        word, token, _ = self.run(lambda: self.store.begin_run(job_id, PARTNER, 1))
        assert word == "ok"
        return token

    def index(self) -> dict[str, float]:
        entries = self.run(lambda: self.redis.zrange(keys.UNFINISHED, 0, -1, withscores=True))  # type: ignore[arg-type,return-value]
        return dict(cast(list[tuple[str, float]], entries))


@pytest.fixture()
def env(redis_url: str) -> Iterator[Env]:
    environment = Env(redis_url)
    yield environment
    environment.run(environment.redis.aclose)
    environment.loop.close()


def swept_count(partner: str, status: str) -> float:
    return SWEPT.labels(partner, status)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_the_message_id_the_sweeper_looks_for_is_the_one_the_workers_send() -> None:
    assert message_id("job_abc", 7) == celery_task_id("job_abc", 7)


def test_default_timings_follow_the_visibility_timeout() -> None:
    assert default_timings(300) == (60, 30)
    assert default_timings(10) == (5, 2.5)


def test_submitting_a_job_indexes_it_for_the_sweeper(env: Env) -> None:
    job_id = env.submit()
    assert list(env.index()) == [job_id]
    assert env.index()[job_id] == pytest.approx(float(env.job(job_id)["created_at"]) * 1000, abs=1)


def test_a_queued_job_whose_message_was_removed_is_sent_again_once(env: Env) -> None:
    lost, kept = env.submit("lost"), env.submit("kept")
    env.take_message(lost)
    sweeper = env.sweeper()
    before = swept_count(PARTNER, "queued")

    first = env.run(sweeper.sweep)  # seen missing once: only suspected
    assert (first.looked_at, first.present, first.suspected, first.resent) == (2, 1, 1, [])
    assert env.job(lost)["status"] == "queued" and env.job(lost)["attempt"] == "1"

    second = env.run(sweeper.sweep)  # still missing, unchanged: re-sent
    assert second.resent == [lost]
    job = env.job(lost)
    assert (job["status"], job["attempt"]) == ("queued", "2")
    entry = env.history(lost)[-1]
    assert (entry["outcome"], entry["attempt"], entry["partner"]) == ("swept", 2, PARTNER)
    assert "message lost" in entry["error"]
    Attempt.model_validate(entry)  # the API can show it
    due = env.run(lambda: env.redis.zrange(keys.delayed(), 0, -1))
    assert due == [delayed_member(lost, PARTNER, 2)]  # the mover sends it through the normal enqueue path
    assert env.run(lambda: env.redis.lrange(keys.delayed_wake(), 0, -1)) == ["1"]
    assert swept_count(PARTNER, "queued") == before + 1

    for _ in range(3):  # now in the delay queue: found, never sent again; the kept job is never touched
        assert env.run(sweeper.sweep).resent == []
    assert env.job(lost)["attempt"] == "2" and env.job(kept)["attempt"] == "1"
    assert env.history(kept) == []


def test_a_job_whose_message_is_anywhere_is_never_swept(env: Env) -> None:
    in_queue, delivered, running, delayed = (env.submit(f"job {i}") for i in range(4))
    env.deliver(delivered)
    env.deliver(running)
    token = env.claim(running)
    # `delayed` waits for a retry: its next attempt is in the delay queue, its message for attempt 1 is gone
    env.take_message(delayed)
    env.run(lambda: env.redis.hset(keys.job(delayed), mapping={"status": "retrying", "attempt": "2"}))
    env.run(lambda: env.redis.zadd(keys.delayed(), {delayed_member(delayed, PARTNER, 2): 10**13}))
    sweeper = env.sweeper()
    for _ in range(4):
        result = env.run(sweeper.sweep)
        assert (result.present, result.resent) == (4, [])
    assert {job_id: env.job(job_id)["attempt"] for job_id in (in_queue, delivered, running)} == dict.fromkeys(
        (in_queue, delivered, running), "1")
    assert env.job(running)["run_token"] == token


def test_a_running_job_whose_delivery_was_removed_is_swept_only_after_its_claim_is_dead(env: Env) -> None:
    job_id = env.submit()
    tag = env.deliver(job_id)
    token = env.claim(job_id)
    env.run(lambda: env.redis.hdel(UNACKED, tag))  # the fault: the delivery is gone; the run died with it

    patient = env.sweeper(running_confirm_s=3600)  # a run lasts at most the visibility timeout
    for _ in range(3):
        assert env.run(patient.sweep).resent == []
    assert env.job(job_id)["status"] == "running"

    sweeper = env.sweeper()
    env.run(sweeper.sweep)
    assert env.run(sweeper.sweep).resent == [job_id]
    job = env.job(job_id)
    assert (job["status"], job["attempt"], "run_token" in job) == ("queued", "2", False)
    # the dead run's settle, should it come back, is a no-op: it no longer holds the job
    record = env.run(lambda: env.store.get(job_id))
    assert record is not None
    assert not env.run(lambda: env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "late"))


def test_a_running_job_whose_worker_has_no_heartbeat_is_swept_though_its_delivery_waits(env: Env) -> None:
    """A SIGKILLed worker's delivery stays in kombu's unacked hash until the visibility timeout; its heartbeat is gone
    within seconds, and that is what the sweeper goes by."""
    alive_job, dead_job = env.submit("alive"), env.submit("dead")
    for job_id in (alive_job, dead_job):
        env.deliver(job_id)
    env.store.run_owner = "host:1:alive"
    env.run(lambda: run_owners.beat(env.redis, "host:1:alive"))
    alive_token = env.claim(alive_job)
    env.store.run_owner = "host:2:dead"  # never beats
    dead_token = env.claim(dead_job)
    assert run_owners.owner_of(dead_token) == "host:2:dead" and run_owners.owner_of(alive_token) == "host:1:alive"

    sweeper = env.sweeper(running_confirm_s=3600)  # what a delivery alone would need: the visibility timeout
    first = env.run(sweeper.sweep)
    assert first.resent == [] and first.present == 1 and first.suspected == 1
    env.run(lambda: run_owners.beat(env.redis, "host:1:alive"))
    assert env.run(sweeper.sweep).resent == [dead_job]
    dead, alive = env.job(dead_job), env.job(alive_job)
    assert (dead["status"], dead["attempt"], "run_token" in dead) == ("queued", "2", False)
    assert env.history(dead_job)[-1]["error"] == ABANDONED
    assert (alive["status"], alive["run_token"]) == ("running", alive_token)
    # The old delivery, restored by kombu later, carries attempt 1: it cannot claim the job again.
    assert env.run(lambda: env.store.begin_run(dead_job, PARTNER, 1))[0] == "stale"


def test_a_heartbeat_ends_when_its_worker_stops(env: Env) -> None:
    async def go() -> tuple[bool, bool]:
        task = asyncio.create_task(run_owners.heartbeat_forever(env.redis, "host:3:stopping"))
        for _ in range(200):
            if await env.redis.exists(keys.run_owner_alive("host:3:stopping")):
                break
            await asyncio.sleep(0.01)
        beating = bool(await env.redis.exists(keys.run_owner_alive("host:3:stopping")))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return beating, bool(await env.redis.exists(keys.run_owner_alive("host:3:stopping")))

    assert env.run(go) == (True, False)
    assert env.run(lambda: run_owners.dead_owners(env.redis, ["host:3:stopping"])) == {"host:3:stopping"}


def test_a_job_that_changes_between_two_looks_is_not_sent_again(env: Env) -> None:
    job_id = env.submit()
    env.take_message(job_id)
    sweeper = env.sweeper()
    env.run(sweeper.sweep)
    env.claim(job_id)  # a worker took it after all (its message was in flight): a new run token
    assert env.run(sweeper.sweep).resent == []
    assert env.job(job_id)["attempt"] == "1"


def test_several_sweepers_send_a_lost_job_again_exactly_once(env: Env) -> None:
    job_ids = [env.submit(f"lost {i}") for i in range(20)]
    for job_id in job_ids:
        env.take_message(job_id)
    sweepers = [env.sweeper() for _ in range(4)]
    for sweeper in sweepers:
        env.run(sweeper.sweep)

    async def all_at_once() -> list[list[str]]:
        results = await asyncio.gather(*(sweeper.sweep() for sweeper in sweepers))
        return [result.resent for result in results]

    resent = [job_id for found in env.run(all_at_once) for job_id in found]
    assert sorted(resent) == sorted(job_ids)
    assert {env.job(job_id)["attempt"] for job_id in job_ids} == {"2"}
    assert all([e["outcome"] for e in env.history(job_id)] == ["swept"] for job_id in job_ids)
    members = env.run(lambda: env.redis.zrange(keys.delayed(), 0, -1))
    assert sorted(members) == sorted(delayed_member(job_id, PARTNER, 2) for job_id in job_ids)


def test_only_one_process_sweeps_at_a_time(env: Env) -> None:
    first, second = env.sweeper(), env.sweeper()
    assert env.run(first.holds_lock)
    assert not env.run(second.holds_lock)
    assert env.run(first.holds_lock)  # renewed
    env.run(lambda: env.redis.delete(keys.SWEEPER_LOCK))  # its holder died: the lock ran out
    assert env.run(second.holds_lock) and not env.run(first.holds_lock)


def test_finished_and_expired_jobs_leave_the_index_and_recent_ones_wait_for_the_grace_period(env: Env) -> None:
    finished, expired, recent = env.submit("done"), env.submit("expired"), env.submit("recent")
    env.run(lambda: env.redis.hset(keys.job(finished), "status", "succeeded"))
    env.run(lambda: env.redis.delete(keys.job(expired)))
    env.take_message(recent)
    env.run(lambda: env.redis.zadd(keys.UNFINISHED, {finished: 1, expired: 1}, xx=True))  # long ago
    result = env.run(env.sweeper(grace_s=3600).sweep)
    assert (result.looked_at, result.finished, result.resent) == (2, 2, [])
    assert list(env.index()) == [recent]


def test_one_round_clears_more_finished_jobs_than_a_page_holds(env: Env) -> None:
    count = 2 * PAGE + 100
    gone = {f"job_gone_{i:06d}": 1 for i in range(count)}  # records expired long ago
    env.run(lambda: env.redis.zadd(keys.UNFINISHED, gone))  # type: ignore[arg-type]
    result = env.run(env.sweeper(grace_s=3600).sweep)
    assert (result.looked_at, result.finished) == (count, count)
    assert env.index() == {}


def test_a_swept_entry_is_not_a_try_on_the_partner() -> None:
    partner = PartnerConfig.model_validate({"name": PARTNER, "adapter": "openai", "base_url": "http://127.0.0.1:9/v1",
                                            "model": "m", "retry": {"max_attempts": 2}})
    config = GatewayConfig(partners={PARTNER: partner}, tenants={})
    swept = Attempt(partner=PARTNER, attempt=2, outcome="swept", started_at=0, duration_ms=0)
    failed = Attempt(partner=PARTNER, attempt=3, outcome="retryable", started_at=0, duration_ms=0)
    decision = decide(config, PARTNER, PARTNER, [swept, swept, failed], PartnerResponse(Outcome.RETRYABLE))
    assert decision.action == "retry"  # one try of two, however often it was swept


# --- real workers --------------------------------------------------------------------------------------------------


@pytest.fixture()
def fleet_client(fleet: FleetEnv) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(fleet.env["FEDGATE_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


def _delivery_of(client: redis.Redis, job_id: str, attempt: int = 1) -> str | None:
    for tag, value in client.hscan_iter(UNACKED):
        if json.loads(value)[0]["headers"]["id"] == celery_task_id(job_id, attempt):
            return str(tag)
    return None


def test_a_fleet_job_whose_queued_message_is_deleted_is_swept_and_finishes(
    fleet: FleetEnv, api: httpx.Client, fleet_client: redis.Redis
) -> None:
    """No worker reads sim-gemini yet: one job's message is deleted from the queue, then a worker starts. Its
    sweeper sends the lost job again; the other job is served as usual."""
    queue = keys.partner_queue("sim-gemini")
    lost, kept = submit_job(api, "sim-gemini", "swept: lost"), submit_job(api, "sim-gemini", "swept: kept")
    message = next(str(m) for m in fleet_client.lrange(queue, 0, -1)
                   if json.loads(m)["headers"]["id"] == celery_task_id(lost, 1))
    assert fleet_client.lrem(queue, 1, message) == 1
    worker = fleet.start_worker("sim-gemini", concurrency=20)
    try:
        lost_job, kept_job = finish_job(api, lost, timeout=60), finish_job(api, kept, timeout=60)
        swept_metric = _worker_metric(worker, 'fedgate_swept_jobs_total{partner="sim-gemini",status="queued"}')
    finally:
        worker.stop()
    assert lost_job["status"] == "succeeded" and lost_job["output"].endswith("swept: lost")
    assert [a["outcome"] for a in lost_job["history"]] == ["swept", "ok"]
    assert lost_job["attempts"] == 1
    assert kept_job["status"] == "succeeded"
    assert [a["outcome"] for a in kept_job["history"]] == ["ok"]
    assert "its message was lost; re-sent as attempt 2" in worker.output()
    assert swept_metric == 1


def _worker_metric(worker: Proc, series: str) -> float | None:
    """A series from the worker's own /metrics (its address is in its log)."""
    found = re.search(r"worker metrics on (http://\S+/metrics)", worker.output())
    assert found, worker.output()[-2000:]
    for line in httpx.get(found.group(1), timeout=10).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_fleet_job_running_on_a_dead_worker_is_swept_only_when_its_delivery_is_gone(
    fleet: FleetEnv, api: httpx.Client, sim: httpx.Client, fleet_client: redis.Redis
) -> None:
    """Two calls in flight on a worker that is SIGKILLed. One job's unacknowledged delivery was deleted first (no
    restore can bring it back): the sweeper sends it again once its claim is older than the visibility timeout. The
    other's delivery is intact: it comes back after the visibility timeout as a redelivery, or is swept because its
    worker's heartbeat is gone."""
    sim.put("/_sim/partners/sim-azure", json={"latency_ms": 3000}).raise_for_status()
    first: Proc = fleet.start_worker("sim-azure", concurrency=20)
    gone, intact = submit_job(api, "sim-azure", "swept: gone"), submit_job(api, "sim-azure", "swept: intact")

    def both_delivered_and_running() -> bool:
        statuses = [fleet_client.hget(keys.job(job_id), "status") for job_id in (gone, intact)]
        return statuses == ["running", "running"] and None not in (
            _delivery_of(fleet_client, gone), _delivery_of(fleet_client, intact))

    wait_for(both_delivered_and_running, 20, what="both jobs running")
    tag = _delivery_of(fleet_client, gone)
    assert tag is not None and fleet_client.hdel(UNACKED, tag) == 1
    fleet_client.zrem(f"{UNACKED}_index", tag)
    first.stop(sig=9)
    sim.put("/_sim/partners/sim-azure", json={"latency_ms": 0}).raise_for_status()
    second = fleet.start_worker("sim-azure", concurrency=20)
    try:
        gone_job, intact_job = finish_job(api, gone, timeout=90), finish_job(api, intact, timeout=90)
    finally:
        second.stop()
    assert gone_job["status"] == "succeeded" and intact_job["status"] == "succeeded"
    assert [a["outcome"] for a in gone_job["history"]] == ["swept", "ok"]
    # The intact delivery comes back after the visibility timeout, unless the sweeper saw first that its worker's
    # heartbeat was gone: one of the two, never both (whichever is second finds the job moved on).
    assert [a["outcome"] for a in intact_job["history"]] in (["redelivered", "ok"], ["swept", "ok"])
