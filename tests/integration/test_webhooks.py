"""Webhook deliveries one attempt at a time, against a real redis-server (a database of each test's own) with a
mocked HTTP transport: what is stored (encrypted), sent, retried, dead-lettered and replayed."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from gateway_core import webhooks as wh
from gateway_core.crypto import PayloadCipher
from gateway_core.jobs.models import new_job_id
from gateway_core.webhooks import WebhookEvent, WebhookSettings, delivery, new_secret, queue
from tests.helpers import with_redis
from tests.unit.test_webhooks import job_view

T = TypeVar("T")


class StubEnqueuer:
    """Records the webhook attempts it is asked to send; each message is an LPUSH to a list of its own, so a test
    sees whether the message was written."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.key = f"test:webhook-messages:{new_job_id()}"

    def job_messages(self, attempts: Iterable[tuple[str, str, int]], lane: str = "") -> list[tuple[Any, ...]]:
        raise AssertionError("webhooks send no job messages")

    def webhook_messages(self, attempts: Iterable[tuple[str, int]]) -> list[tuple[Any, ...]]:
        attempts = list(attempts)
        self.sent += attempts
        return [("lpush", self.key, f"{delivery_id}:{attempt}") for delivery_id, attempt in attempts]


class Env:
    def __init__(self, url: str) -> None:
        self.url = url
        self.cipher = PayloadCipher([Fernet.generate_key()])
        self.enqueuer = StubEnqueuer()

    def run(self, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        return with_redis(self.url, work)

    def enqueue(self, url: str, secrets: list[str], **kw: Any) -> str:
        event = WebhookEvent.for_job(job_view())

        async def go(client: aioredis.Redis) -> str:
            return await queue.enqueue_webhook(
                client, self.cipher, tenant="t1", url=url, event=event,
                msg_id=wh.job_message_id(new_job_id(), event.type), secrets=secrets, enqueuer=self.enqueuer, **kw)

        return self.run(go)

    def deliver(self, delivery_id: str, attempt: int, handler: Callable[[httpx.Request], httpx.Response],
                allow: list[str] | None = None) -> str:
        async def go(client: aioredis.Redis) -> str:
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
                return await delivery.deliver(client, self.cipher, delivery_id, attempt,
                                              allow=allow if allow is not None else ["127.0.0.0/8"], http=http)

        return self.run(go)

    def hash(self, delivery_id: str) -> dict[str, str]:
        return self.run(lambda c: c.hgetall(wh.delivery_key(delivery_id)))  # type: ignore[arg-type,return-value]

    def zscore(self, key: str, member: str) -> float | None:
        return self.run(lambda c: c.zscore(key, member))  # type: ignore[arg-type,return-value]


@pytest.fixture()
def env(redis_url: str) -> Env:
    """Webhook deliveries on this test's own Redis database."""
    return Env(redis_url)


def test_enqueue_stores_encrypted_body_sends_first_attempt_and_is_idempotent(env: Env) -> None:
    secret = new_secret()
    delivery_id = env.enqueue("http://127.0.0.1:9/hook", [secret])
    stored = env.hash(delivery_id)
    assert stored["state"] == "pending" and stored["next_attempt"] == "1"
    assert all("the answer" not in value and secret not in value for value in stored.values())
    assert json.loads(env.cipher.decrypt(stored["body"].encode()))["data"]["output"] == "the answer"
    assert env.enqueuer.sent == [(delivery_id, 1)]
    assert env.run(lambda c: c.lrange(env.enqueuer.key, 0, -1)) == [f"{delivery_id}:1"]  # type: ignore[arg-type]
    assert env.zscore(wh.DELAYED_KEY, f"{delivery_id}:1") is None  # the safety net went with the message sent

    async def again(client: aioredis.Redis) -> str:
        event = WebhookEvent.for_job(job_view())
        return await queue.enqueue_webhook(client, env.cipher, tenant="t1", url="http://127.0.0.1:9/x",
                                           event=event, msg_id=stored["msg_id"], enqueuer=env.enqueuer)

    assert env.run(again) == delivery_id and len(env.enqueuer.sent) == 1


def test_timeout_schedules_the_next_attempt_in_the_delay_set(env: Env) -> None:
    delivery_id = env.enqueue("http://127.0.0.1:9/hook", [new_secret()])

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    assert "retry in" in env.deliver(delivery_id, 1, hang)
    stored = env.hash(delivery_id)
    assert stored["next_attempt"] == "2" and stored["last_status"] == "" and "no answer" in stored["last_error"]
    assert env.zscore(wh.DELAYED_KEY, f"{delivery_id}:2") is not None
    assert env.deliver(delivery_id, 1, hang).startswith("skipped")  # a duplicate of attempt 1 changes nothing


def test_success_sends_signed_headers_and_drops_the_body(env: Env) -> None:
    secret = new_secret()
    delivery_id = env.enqueue("http://127.0.0.1:9/hook", [secret])
    seen: list[httpx.Request] = []

    def ok(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    assert env.deliver(delivery_id, 1, ok).startswith("delivered")
    request = seen[0]
    assert request.headers["content-type"] == "application/json"
    Webhook(secret).verify(request.content, dict(request.headers))
    stored = env.hash(delivery_id)
    assert stored["state"] == "delivered" and "body" not in stored and "secrets" not in stored
    assert env.deliver(delivery_id, 1, ok) == "skipped: already delivered" and len(seen) == 1


def test_410_dead_letters_at_once(env: Env) -> None:
    delivery_id = env.enqueue("http://127.0.0.1:9/hook", [new_secret()])
    assert "dead-lettered" in env.deliver(delivery_id, 1, lambda r: httpx.Response(410))
    stored = env.hash(delivery_id)
    assert stored["state"] == "dead_lettered" and stored["last_status"] == "410"
    assert env.zscore(wh.DEAD_LETTER_KEY, delivery_id) is not None
    assert env.zscore(wh.DELAYED_KEY, f"{delivery_id}:2") is None


def test_refused_destination_dead_letters_without_a_request(env: Env) -> None:
    delivery_id = env.enqueue("http://169.254.169.254/latest/meta-data/", [new_secret()])
    seen: list[httpx.Request] = []
    result = env.deliver(delivery_id, 1, lambda r: seen.append(r) or httpx.Response(200), allow=["127.0.0.0/8"])
    assert "SSRF" in result and not seen
    assert env.hash(delivery_id)["state"] == "dead_lettered"


def test_no_secret_dead_letters_rather_than_sending_unsigned(env: Env) -> None:
    delivery_id = env.enqueue("http://127.0.0.1:9/hook", [])
    seen: list[httpx.Request] = []
    assert "no webhook secret" in env.deliver(delivery_id, 1, lambda r: seen.append(r) or httpx.Response(200))
    assert not seen


def test_exhausted_then_replayed_keeps_the_webhook_id(env: Env) -> None:
    delivery_id = env.enqueue("http://127.0.0.1:9/hook", [new_secret()],
                              settings=WebhookSettings(max_attempts=2, base_delay_s=0.01, max_delay_s=0.01))
    ids: list[str] = []

    def fail(request: httpx.Request) -> httpx.Response:
        ids.append(request.headers["webhook-id"])
        return httpx.Response(502)

    assert "retry in" in env.deliver(delivery_id, 1, fail)
    assert "dead-lettered" in env.deliver(delivery_id, 2, fail)
    assert env.zscore(wh.DEAD_LETTER_KEY, delivery_id) is not None
    assert env.run(lambda c: queue.replay_webhook(c, delivery_id))
    assert env.zscore(wh.DEAD_LETTER_KEY, delivery_id) is None
    assert env.zscore(wh.DELAYED_KEY, f"{delivery_id}:3") is not None
    assert "retry in" in env.deliver(delivery_id, 3, fail)  # counted afresh: attempt 1 of 2 after the replay
    assert len(set(ids)) == 1
    view = env.run(lambda c: queue.describe_delivery(c, delivery_id))
    assert view is not None and "body" not in view and view["attempts"] == "3"
