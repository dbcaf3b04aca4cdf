"""The webhook worker (`fedgate webhook-worker`) as a real process on a Redis database of its own, delivering to
real loopback receivers: it reads queue `webhooks` and nothing else (a partner worker no longer reads it), cuts a
dripping receiver at the total deadline and retries, keeps a tenant to its cap of deliveries in flight (the rest
wait in Redis, not in the worker) so another tenant's deliveries arrive promptly, and delivers a job's webhook that
only the settle step wrote (the worker that settled it died before sending it)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from gateway_core import webhooks as wh
from gateway_core.config import load_config
from gateway_core.crypto import PayloadCipher
from gateway_core.jobs.models import JobStatus, Message, Usage, new_job_id, now
from gateway_core.jobs.store import JobRecord, JobStore
from gateway_core.settings import Settings
from gateway_core.webhooks import WebhookEvent, WebhookSettings, load_or_create_secret, new_secret, queue
from gateway_core.webhooks.keys import in_flight_key, parked_key
from tests.conftest import TEST_CONFIG
from tests.helpers import ROOT, Proc, RedisDatabases, wait_for
from tests.integration import test_webhook_slots as slots
from tests.integration.test_webhook_delivery import start_receiver
from tests.integration.test_webhook_slots import DripReceiver
from tests.unit.test_webhooks import job_view
from workers.celery_app import make_celery
from workers.enqueue import CeleryEnqueuer

drip = slots.drip  # a receiver that drips its answer one byte at a time, never finishing until healed

DEADLINE_S = 6.0  # FEDGATE_WEBHOOK_TIMEOUT_S of the worker under test
CAP = 2  # FEDGATE_WEBHOOK_MAX_IN_FLIGHT_PER_TENANT
CONCURRENCY = 6  # the worker holds 6 deliveries in flight (plus a few prefetched): a stalled tenant could fill it
PATIENT = WebhookSettings(max_attempts=8, base_delay_s=0.05, max_delay_s=0.2)


@dataclass
class HookWorker:
    url: str
    home: Path
    env: dict[str, str]
    cipher: PayloadCipher
    enqueuer: CeleryEnqueuer
    worker: Proc
    sync: redis.Redis

    def enqueue(self, url: str, tenant: str) -> str:
        event = WebhookEvent.for_job(job_view())

        async def go() -> str:
            client = aioredis.Redis.from_url(self.url, decode_responses=True)
            try:
                return await queue.enqueue_webhook(
                    client, self.cipher, tenant=tenant, url=url, event=event,
                    msg_id=wh.job_message_id(new_job_id(), event.type), secrets=[new_secret()], settings=PATIENT,
                    enqueuer=self.enqueuer)
            finally:
                await client.aclose()

        return asyncio.run(go())

    def delivery(self, delivery_id: str) -> dict[str, str]:
        return self.sync.hgetall(wh.delivery_key(delivery_id))  # type: ignore[return-value]

    def states(self, delivery_ids: list[str]) -> list[str]:
        return [self.delivery(d).get("state", "") for d in delivery_ids]

    def all_delivered(self, delivery_ids: list[str], timeout: float, what: str) -> None:
        try:
            wait_for(lambda: set(self.states(delivery_ids)) == {"delivered"}, timeout, what=what)
        except AssertionError:
            raise AssertionError(f"{self.states(delivery_ids)}\n{self.worker.output()[-3000:]}") from None


@pytest.fixture(scope="module")
def hooks(redis_databases: RedisDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookWorker]:
    home = tmp_path_factory.mktemp("webhook-worker-home")
    url = redis_databases.url()
    key = Fernet.generate_key()
    load_or_create_secret(home / "dev-webhook-secret")  # the test config's `dev` tenant signs with it
    env = dict(os.environ)
    env.update({
        "FEDGATE_HOME": str(home),
        "FEDGATE_REDIS_URL": url,
        "FEDGATE_CONFIG": str(TEST_CONFIG),
        "FEDGATE_SIMULATOR_URL": "http://127.0.0.1:9",
        "FEDGATE_ENCRYPTION_KEYS": key.decode(),
        "FEDGATE_VISIBILITY_TIMEOUT_S": "60",
        "FEDGATE_WEBHOOK_ALLOW": "127.0.0.0/8",  # the receivers are local; SSRF rules refuse loopback otherwise
        "FEDGATE_WEBHOOK_TIMEOUT_S": str(DEADLINE_S),
        "FEDGATE_WEBHOOK_MAX_IN_FLIGHT_PER_TENANT": str(CAP),
        "FEDGATE_WORKER_METRICS_PORT": "0",
    })
    log = home / "webhook-worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway_api.cli", "webhook-worker", "--concurrency", str(CONCURRENCY)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    worker = Proc("webhook-worker", process, log)
    celery = make_celery(Settings(redis_url=url))
    sync = redis.Redis.from_url(url, decode_responses=True)
    try:
        wait_for(lambda: "ready." in worker.output() or process.poll() is not None, 60, what="webhook worker ready")
        assert process.poll() is None, worker.output()[-3000:]
        yield HookWorker(url, home, env, PayloadCipher([key]), CeleryEnqueuer(celery), worker, sync)
    finally:
        worker.stop()
        celery.close()
        sync.close()


def consumed_queues(banner: str) -> list[str]:
    """The queues a Celery worker's start-up banner lists (`.> <queue> exchange=...`)."""
    return re.findall(r"^\s*\.> (\S+)\s+exchange=", banner, flags=re.M)


# --- the tests -------------------------------------------------------------------------------------------------


def test_the_webhook_worker_reads_the_webhook_queue_only_and_partner_workers_do_not(hooks: HookWorker) -> None:
    assert consumed_queues(hooks.worker.output()) == [wh.WEBHOOK_QUEUE]
    log = hooks.home / "partner-worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway_api.cli", "worker", "--partners", "sim-openai", "--lanes", "interactive",
             "--concurrency", "5"], env=hooks.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    partner_worker = Proc("partner-worker", process, log)
    try:
        wait_for(lambda: "ready." in partner_worker.output() or process.poll() is not None, 60,
                 what="partner worker ready")
        assert consumed_queues(partner_worker.output()) == ["partner.sim-openai"], partner_worker.output()[-3000:]
    finally:
        partner_worker.stop()


def test_a_stalled_tenant_cannot_block_another_tenants_deliveries(hooks: HookWorker, drip: DripReceiver) -> None:
    """Tenant `stalled` sends more deliveries than the worker has slots, to a receiver that drips its answer a byte
    at a time. Only CAP of them are in flight; the rest are parked in Redis. Tenant `prompt`'s deliveries arrive
    at once meanwhile. The dripping ones are cut at the deadline and retried; once the receiver heals, all arrive."""
    receiver, server = start_receiver()
    try:
        stalled = [hooks.enqueue(drip.url(), "stalled") for _ in range(CONCURRENCY + 4)]
        wait_for(lambda: drip.holding() == CAP and hooks.sync.zcard(parked_key("stalled")) == len(stalled) - CAP,
                 30, what="two stalled deliveries in flight and the others parked")
        assert hooks.sync.zcard(in_flight_key("stalled")) == CAP

        started = time.monotonic()
        prompt = [hooks.enqueue(receiver.url(f"/prompt/{n}"), "prompt") for n in range(3)]
        hooks.all_delivered(prompt, DEADLINE_S - 1, what="the prompt tenant's deliveries")
        took = time.monotonic() - started
        assert drip.holding() == CAP and hooks.sync.zcard(in_flight_key("stalled")) == CAP, (
            "the prompt tenant's deliveries arrived, but only once the stalled tenant's were cut"
        )
        assert took < DEADLINE_S - 1, took
        assert [hooks.delivery(d)["attempts"] for d in prompt] == ["1", "1", "1"]

        # The dripping attempts are cut at the deadline (not kept alive by per-read timeouts) and retried.
        wait_for(lambda: len(drip.held_for_s) >= CAP, DEADLINE_S + 10, what="the dripping attempts to be cut")
        assert all(DEADLINE_S - 0.5 <= held < DEADLINE_S + 4 for held in drip.held_for_s[:CAP]), drip.held_for_s
        cut = [hooks.delivery(d) for d in stalled if hooks.delivery(d).get("attempts") == "1"]
        assert cut and all("deadline" in d["last_error"] and d["state"] == "pending" for d in cut), cut

        drip.heal()
        hooks.all_delivered(stalled, 60, what="the stalled tenant's deliveries once its receiver answers")
        assert drip.most_open == CAP, "the stalled tenant never had more than its cap in flight"
        # The last delivery's slot is released right after its state is written: wait for it, not for a moment.
        wait_for(lambda: hooks.sync.zcard(in_flight_key("stalled")) == 0 and hooks.sync.zcard(
            parked_key("stalled")) == 0, 10, what="the stalled tenant's slots to be free")
        assert OUTPUT_NOT_LOGGED not in hooks.worker.output()
    finally:
        server.shutdown()
        server.server_close()


OUTPUT_NOT_LOGGED = "the answer"  # the job's output in job_view(): it reaches the receiver, never the log


def test_a_job_settled_by_a_worker_that_died_before_notifying_still_gets_its_webhook(
    hooks: HookWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settle step alone wrote the delivery (no first attempt was sent: the settling worker died at once); the
    webhook worker's mover sends it when its safety-net entry is due (due at once here) and it is delivered."""
    monkeypatch.setenv("FEDGATE_SIMULATOR_URL", "http://127.0.0.1:9")  # the test config's partners point there
    config = load_config(TEST_CONFIG, home=hooks.home)
    receiver, server = start_receiver()

    async def settle() -> str:
        client = aioredis.Redis.from_url(hooks.url, decode_responses=True)
        store = JobStore(client, hooks.cipher, 3600)
        try:
            record = JobRecord(
                id=new_job_id(), tenant="dev", partner="sim-openai", requested_partner="sim-openai",
                status=JobStatus.QUEUED, attempt=1, created_at=now(), messages=[Message(role="user", content="hi")],
                webhook_url=receiver.url("/settled"),
            )
            await store.create(record)
            _, token, _ = await store.begin_run(record.id, "sim-openai", 1)
            final = dataclasses.replace(record, status=JobStatus.SUCCEEDED, output="settled output",
                                        finished_at=now(), answered_by="sim-openai")
            webhook = queue.job_webhook(hooks.cipher, config, final, 3600, safety_net_ms=0)
            assert webhook is not None
            assert await store.publish_success(record, token, "settled output", Usage(), "sim-openai",
                                               webhook=webhook)
            return record.id  # and nothing else: no first attempt sent
        finally:
            await client.aclose()

    try:
        job_id = asyncio.run(settle())
        (request,) = wait_for(lambda: receiver.seen("/settled"), 30, what="the settled job's webhook")
    finally:
        server.shutdown()
        server.server_close()
    secret = (hooks.home / "dev-webhook-secret").read_text().strip()
    event = Webhook(secret).verify(request.body, {k.lower(): v for k, v in request.headers.items()})
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job_id
    assert event["data"]["output"] == "settled output"
    assert json.loads(request.body)["data"]["status"] == "succeeded"
