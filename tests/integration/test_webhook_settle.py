"""A finished job's webhook is written by the same Redis step that settles the job (gateway_core/fleet/lua/
job_settle_success.lua and job_settle_failure.lua), on a real redis-server (a database of each test's own): right
after the settle, before any notify code runs, the delivery and the delay-queue entry that sends it are there, so
a worker that dies between settling and notifying loses nothing. tests/integration/test_webhook_worker.py shows a
webhook worker delivering such a delivery with no notify code run at all."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core import webhooks as wh
from gateway_core.config import GatewayConfig, load_config
from gateway_core.crypto import PayloadCipher
from gateway_core.fleet import keys
from gateway_core.jobs.models import JobStatus, Message, Usage, new_job_id, now
from gateway_core.jobs.store import JobRecord, JobStore, WebhookWrite
from gateway_core.webhooks import queue
from tests.conftest import TEST_CONFIG
from tests.helpers import run_async_scenario

TTL_S = 3600
PROMPT = "Refund order 77 for mia@example.com"
HOOK = "http://127.0.0.1:9/hooks/fedgate"


class StubEnqueuer:
    """A webhook attempt's message as an LPUSH to a list of the test's own."""

    def __init__(self) -> None:
        self.key = f"test:webhook-messages:{new_job_id()}"

    def job_messages(self, attempts: Iterable[tuple[str, str, int]], lane: str = "") -> list[tuple[Any, ...]]:
        raise AssertionError("webhooks send no job messages")

    def webhook_messages(self, attempts: Iterable[tuple[str, int]]) -> list[tuple[Any, ...]]:
        return [("lpush", self.key, f"{delivery_id}:{attempt}") for delivery_id, attempt in attempts]


@dataclasses.dataclass
class Env:
    redis: aioredis.Redis
    store: JobStore
    config: GatewayConfig

    async def claimed(self, webhook_url: str | None = HOOK) -> tuple[JobRecord, str]:
        record = JobRecord(
            id=new_job_id(), tenant="dev", partner="p1", requested_partner="p1", status=JobStatus.QUEUED, attempt=1,
            created_at=now(), messages=[Message(role="user", content=PROMPT)], webhook_url=webhook_url,
        )
        await self.store.create(record)
        word, token, _ = await self.store.begin_run(record.id, "p1", 1)
        assert word == "ok"
        loaded = await self.store.get(record.id, with_payload=True)
        assert loaded is not None and loaded.webhook_url == webhook_url
        return loaded, token

    def webhook(self, record: JobRecord, status: JobStatus, **finished: Any) -> WebhookWrite | None:
        final = dataclasses.replace(record, status=status, finished_at=now(), **finished)
        return queue.job_webhook(self.store.cipher, self.config, final, TTL_S)

    async def delivery(self, delivery_id: str) -> dict[str, str]:
        return await self.redis.hgetall(wh.delivery_key(delivery_id))  # type: ignore[no-any-return,misc,return-value]

    async def now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


Runner = Callable[[Callable[[Env], Awaitable[Any]]], Any]


@pytest.fixture()
def run_env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    cipher = PayloadCipher([Fernet.generate_key()])
    monkeypatch.setenv("FEDGATE_SIMULATOR_URL", "http://127.0.0.1:9")  # the test config's partners point there
    config = load_config(TEST_CONFIG, home=tmp_path)

    def run(scenario: Callable[[Env], Awaitable[Any]]) -> Any:
        return run_async_scenario(redis_url, lambda c: Env(c, JobStore(c, cipher, TTL_S), config), scenario)

    return run


def test_success_writes_the_webhook_in_the_step_that_settles_the_job(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        webhook = env.webhook(record, JobStatus.SUCCEEDED, output="Refunded.", usage=Usage(), answered_by="p1")
        assert webhook is not None
        before = await env.now_ms()
        assert await env.store.publish_success(record, token, "Refunded.", Usage(), "p1", webhook=webhook)
        # Nothing but the settle has run: the job is final and its delivery is stored, waiting to be sent.
        assert await env.redis.hget(keys.job(record.id), "status") == "succeeded"
        stored = await env.delivery(webhook.delivery_id)
        assert stored["state"] == "pending" and stored["next_attempt"] == "1" and stored["tenant"] == "dev"
        assert stored["url"] == HOOK and stored["type"] == "job.succeeded"
        assert stored["msg_id"] == wh.job_message_id(record.id, "job.succeeded")
        assert stored["max_attempts"] == str(env.config.webhooks.max_attempts)
        event = json.loads(env.store.cipher.decrypt(stored["body"].encode()))
        assert event["type"] == "job.succeeded" and event["data"]["id"] == record.id
        assert event["data"]["status"] == "succeeded" and event["data"]["output"] == "Refunded."
        assert all(PROMPT not in value and "Refunded." not in value for value in stored.values())  # encrypted
        assert PROMPT not in json.dumps(event)
        # The entry that sends its first attempt: a safety net the worker removes when it sends the attempt itself.
        due = await env.redis.zscore(wh.DELAYED_KEY, f"{webhook.delivery_id}:1")
        assert due is not None and before + queue.SAFETY_NET_MS <= due <= await env.now_ms() + queue.SAFETY_NET_MS
        assert 0 < await env.redis.pttl(wh.delivery_key(webhook.delivery_id)) <= TTL_S * 1000

    run_env(scenario)


def test_a_dead_letter_writes_its_webhook_in_the_same_step_too(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        webhook = env.webhook(record, JobStatus.DEAD_LETTERED, error="partner refused")
        assert webhook is not None
        assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "partner refused",
                                                   webhook=webhook)
        assert await env.redis.zscore(keys.DEAD_LETTERS, record.id) is not None
        stored = await env.delivery(webhook.delivery_id)
        assert stored["state"] == "pending" and stored["type"] == "job.dead_lettered"
        event = json.loads(env.store.cipher.decrypt(stored["body"].encode()))
        assert event["data"]["status"] == "dead_lettered" and event["data"]["error"] == "partner refused"
        assert await env.redis.zscore(wh.DELAYED_KEY, f"{webhook.delivery_id}:1") is not None

    run_env(scenario)


def test_a_settle_that_lost_the_run_writes_no_webhook(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, _ = await env.claimed()
        webhook = env.webhook(record, JobStatus.SUCCEEDED, output="late")
        assert webhook is not None
        assert not await env.store.publish_success(record, "not-the-token", "late", Usage(), "p1", webhook=webhook)
        assert not await env.store.finish_unsuccessful(record, "not-the-token", JobStatus.DEAD_LETTERED, "x",
                                                       webhook=env.webhook(record, JobStatus.DEAD_LETTERED))
        assert await env.redis.hget(keys.job(record.id), "status") == "running"
        assert not await env.redis.exists(wh.delivery_key(webhook.delivery_id))
        assert await env.redis.zcard(wh.DELAYED_KEY) == 0

    run_env(scenario)


def test_a_job_without_a_webhook_writes_none(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed(webhook_url=None)
        assert env.webhook(record, JobStatus.SUCCEEDED) is None
        assert await env.store.publish_success(record, token, "out", Usage(), "p1", webhook=None)
        assert await env.redis.zcard(wh.DELAYED_KEY) == 0
        assert not [key async for key in env.redis.scan_iter("fg:webhook:*")]

    run_env(scenario)


def test_an_existing_delivery_is_left_as_it_is(run_env: Runner) -> None:
    """A replayed dead letter that is dead-lettered again has the same delivery (same message id): the settle does
    not reset a delivery already made."""

    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        webhook = env.webhook(record, JobStatus.DEAD_LETTERED, error="again")
        assert webhook is not None
        await env.redis.hset(wh.delivery_key(webhook.delivery_id), mapping={"state": "delivered", "attempts": "1"})
        assert await env.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, "again", webhook=webhook)
        assert await env.delivery(webhook.delivery_id) == {"state": "delivered", "attempts": "1"}
        assert await env.redis.zscore(wh.DELAYED_KEY, f"{webhook.delivery_id}:1") is None

    run_env(scenario)


def test_sending_the_first_attempt_replaces_the_safety_net_in_one_step(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, token = await env.claimed()
        webhook = env.webhook(record, JobStatus.SUCCEEDED, output="out")
        assert webhook is not None
        assert await env.store.publish_success(record, token, "out", Usage(), "p1", webhook=webhook)
        enqueuer = StubEnqueuer()
        assert await queue.send_first_attempt(env.redis, enqueuer, webhook.delivery_id)
        assert await env.redis.lrange(enqueuer.key, 0, -1) == [f"{webhook.delivery_id}:1"]
        assert await env.redis.zscore(wh.DELAYED_KEY, f"{webhook.delivery_id}:1") is None

    run_env(scenario)


def test_a_cancel_writes_the_cancelled_webhook_in_its_own_step(run_env: Runner) -> None:
    async def scenario(env: Env) -> None:
        record, _ = await env.claimed()
        webhook = env.webhook(record, JobStatus.CANCELLED, error="cancelled by the client")
        assert webhook is not None
        assert await env.store.cancel(record.id, webhook=webhook) == "running"
        assert await env.redis.hget(keys.job(record.id), "status") == "cancelled"
        stored = await env.delivery(webhook.delivery_id)
        assert stored["state"] == "pending" and stored["type"] == "job.cancelled"
        event = json.loads(env.store.cipher.decrypt(stored["body"].encode()))
        assert event["data"]["status"] == "cancelled" and PROMPT not in json.dumps(event)
        assert await env.redis.zscore(wh.DELAYED_KEY, f"{webhook.delivery_id}:1") is not None
        # Cancelling again changes nothing and stores no second delivery.
        await env.redis.delete(wh.delivery_key(webhook.delivery_id))
        assert await env.store.cancel(record.id, webhook=webhook) == "cancelled"
        assert not await env.redis.exists(wh.delivery_key(webhook.delivery_id))

    run_env(scenario)
