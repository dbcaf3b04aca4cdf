"""Webhook delivery end to end: a real worker process consuming queue `webhooks`, a real Redis, a real local
receiver answering from a script of status codes, and the retry mover running in this process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from gateway_core import webhooks as wh
from gateway_core.crypto import PayloadCipher
from gateway_core.jobs.models import JobStatus, JobView, new_job_id
from gateway_core.settings import Settings
from gateway_core.webhooks import WebhookEvent, WebhookSettings, new_secret
from gateway_core.webhooks.queue import enqueue_webhook, replay_webhook, webhook_mover
from tests.helpers import ROOT, TEST_CONFIG, Proc, RedisDatabases, free_port, wait_for
from workers.celery_app import make_celery
from workers.enqueue import CeleryEnqueuer

FAST = WebhookSettings(max_attempts=5, base_delay_s=0.05, max_delay_s=0.2)
OUTPUT = "the job's output"


# --- a scripted receiver -------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    port: int
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers: int | tuple[int, dict[str, str]]) -> None:
        with self.lock:
            self.scripts[path] = [a if isinstance(a, tuple) else (a, {}) for a in answers]

    def answer(self, request: Received) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append(request)
            script = self.scripts.get(request.path) or []
            return script.pop(0) if script else (200, {})

    def seen(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, headers = receiver.answer(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return receiver, server


# --- the fleet under test ------------------------------------------------------------------------------------


@dataclass
class WebhookFleet:
    redis_url: str
    cipher: PayloadCipher
    enqueuer: CeleryEnqueuer
    receiver: Receiver
    worker: Proc
    sync: redis.Redis

    def enqueue(self, url: str, secrets: list[str], settings: WebhookSettings = FAST, tenant: str = "hooks") -> str:
        event = WebhookEvent.for_job(
            JobView(id="job_hook", status=JobStatus.SUCCEEDED, partner="sim-openai", attempts=1, output=OUTPUT,
                    created_at=time.time())
        )

        async def go() -> str:
            client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
            try:
                return await enqueue_webhook(client, self.cipher, tenant=tenant, url=url, event=event,
                                             msg_id=wh.job_message_id(new_job_id(), event.type), secrets=secrets,
                                             settings=settings, enqueuer=self.enqueuer)
            finally:
                await client.aclose()

        return asyncio.run(go())

    def delivery(self, delivery_id: str) -> dict[str, str]:
        return self.sync.hgetall(wh.delivery_key(delivery_id))  # type: ignore[return-value]

    def finished(self, delivery_id: str, state: str, timeout: float = 30) -> dict[str, str]:
        def check() -> dict[str, str] | None:
            found = self.delivery(delivery_id)
            return found if found.get("state") == state else None

        try:
            return wait_for(check, timeout, what=f"delivery {delivery_id} to be {state}")
        except AssertionError:
            raise AssertionError(f"{self.delivery(delivery_id)}\n{self.worker.output()[-3000:]}") from None

    def scheduled(self, delivery_id: str) -> list[str]:
        return [m for m in self.sync.zrange(wh.DELAYED_KEY, 0, -1) if str(m).startswith(delivery_id + ":")]


class Mover(threading.Thread):
    """The webhook mover's rounds in a loop, as every worker runs it next to the job movers."""

    def __init__(self, redis_url: str, enqueuer: CeleryEnqueuer) -> None:
        super().__init__(name="webhook-mover", daemon=True)
        self.redis_url, self.enqueuer = redis_url, enqueuer
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as exc:  # surfaced by the fixture
            self.error = exc

    async def _loop(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            mover = webhook_mover(client, self.enqueuer)
            while not self.stopping.is_set():
                moved, _ = await mover.move_due()
                if not moved:
                    await asyncio.sleep(0.02)  # poll interval, not synchronisation
        finally:
            await client.aclose()


@pytest.fixture(scope="module")
def hooks(redis_databases: RedisDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookFleet]:
    """A webhook worker and a delay-queue mover of this module's own, on a Redis database of its own."""
    redis_url = redis_databases.url()
    home: Path = tmp_path_factory.mktemp("webhooks-home")
    key = Fernet.generate_key()
    env = dict(os.environ)
    env.update({
        "FEDGATE_HOME": str(home),
        "FEDGATE_REDIS_URL": redis_url,
        "FEDGATE_CONFIG": str(TEST_CONFIG),
        "FEDGATE_SIMULATOR_URL": "http://127.0.0.1:9",
        "FEDGATE_ENCRYPTION_KEYS": key.decode(),
        "FEDGATE_VISIBILITY_TIMEOUT_S": "30",
        "FEDGATE_WEBHOOK_ALLOW": "127.0.0.0/8",  # the receiver is local; SSRF rules refuse loopback otherwise
    })
    log = home / "worker-webhooks.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", wh.WEBHOOK_QUEUE,
         "-I", "workers.webhooks", "-c", "50", "--loglevel", "INFO",  # the app's worker_pool: the asyncio pool
         "-n", f"webhooks-{os.getpid()}@%h", "--without-mingle", "--without-gossip"],
        env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    worker = Proc("worker-webhooks", process, log)
    receiver, server = start_receiver()
    celery = make_celery(Settings(redis_url=redis_url))
    enqueuer = CeleryEnqueuer(celery)
    mover = Mover(redis_url, enqueuer)
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_for(lambda: "ready." in worker.output() or process.poll() is not None, 60, what="webhook worker ready")
        assert process.poll() is None, worker.output()[-3000:]
        assert "fedgate.deliver_webhook" in worker.output(), "worker did not register the webhook task"
        mover.start()
        yield WebhookFleet(redis_url, PayloadCipher([key]), enqueuer, receiver, worker, sync)
        assert mover.error is None, mover.error
    finally:
        mover.stopping.set()
        if mover.is_alive():
            mover.join(timeout=10)
        worker.stop()
        server.shutdown()
        server.server_close()
        celery.close()
        sync.close()


# --- the tests -----------------------------------------------------------------------------------------------


def test_retries_honour_retry_after_keep_the_id_and_sign_with_both_secrets(hooks: WebhookFleet) -> None:
    new, old = new_secret(), new_secret()  # mid-rotation: both secrets sign
    hooks.receiver.script("/flaky", 502, (429, {"retry-after": "1"}), 200)
    delivery_id = hooks.enqueue(hooks.receiver.url("/flaky"), [new, old])

    stored = hooks.finished(delivery_id, "delivered")
    seen = hooks.receiver.seen("/flaky")
    assert len(seen) == 3, [r.headers for r in seen]
    assert stored["attempts"] == "3" and stored["last_status"] == "200"
    assert len({r.headers["webhook-id"] for r in seen}) == 1 and seen[0].headers["webhook-id"] == stored["msg_id"]
    assert seen[2].at - seen[1].at >= 1.0, "the attempt after the 429 came before its retry-after: 1"
    for request in seen:
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        for secret in (new, old):
            event = Webhook(secret).verify(request.body, request.headers)
            wh.verify(secret, request.headers, request.body)
        assert event["type"] == "job.succeeded" and event["data"]["output"] == OUTPUT
        assert "prompt" not in event["data"] and "messages" not in event["data"]
    assert seen[0].body == seen[2].body
    assert hooks.sync.zscore(wh.DEAD_LETTER_KEY, delivery_id) is None
    assert "body" not in stored and not hooks.scheduled(delivery_id)


def test_410_stops_at_once(hooks: WebhookFleet) -> None:
    hooks.receiver.script("/gone", 410, 200)
    delivery_id = hooks.enqueue(hooks.receiver.url("/gone"), [new_secret()])

    stored = hooks.finished(delivery_id, "dead_lettered")
    assert stored["last_status"] == "410" and "410" in stored["last_error"]
    # Final state and nothing scheduled: no further attempt can happen.
    assert not hooks.scheduled(delivery_id)
    assert len(hooks.receiver.seen("/gone")) == 1


def test_exhausted_retries_land_in_the_dead_letter_queue_and_replay(hooks: WebhookFleet) -> None:
    secret = new_secret()
    hooks.receiver.script("/down", 500, 504, 502)
    delivery_id = hooks.enqueue(hooks.receiver.url("/down"), [secret],
                                settings=WebhookSettings(max_attempts=3, base_delay_s=0.05, max_delay_s=0.1))

    wait_for(lambda: hooks.sync.zscore(wh.DEAD_LETTER_KEY, delivery_id) is not None, 30,
             what="the delivery in fg:webhooks:dlq")
    stored = hooks.delivery(delivery_id)
    assert stored["state"] == "dead_lettered" and stored["attempts"] == "3"
    assert stored["last_status"] == "502" and stored["last_error"] == "HTTP 502"
    assert all(OUTPUT not in value and secret not in value for value in stored.values())  # nothing in clear
    assert len(hooks.receiver.seen("/down")) == 3 and not hooks.scheduled(delivery_id)

    # An operator's replay: same webhook-id, retries counted afresh; the receiver now answers 200.
    assert asyncio.run(_replay(hooks.redis_url, delivery_id))
    stored = hooks.finished(delivery_id, "delivered")
    seen = hooks.receiver.seen("/down")
    assert len(seen) == 4 and len({r.headers["webhook-id"] for r in seen}) == 1
    Webhook(secret).verify(seen[-1].body, seen[-1].headers)
    assert hooks.sync.zscore(wh.DEAD_LETTER_KEY, delivery_id) is None


async def _replay(redis_url: str, delivery_id: str) -> bool:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return await replay_webhook(client, delivery_id)
    finally:
        await client.aclose()


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.7:8080/hook"])
def test_private_destinations_are_refused_at_delivery(hooks: WebhookFleet, url: str) -> None:
    delivery_id = hooks.enqueue(url, [new_secret()])
    stored = hooks.finished(delivery_id, "dead_lettered")
    assert "SSRF" in stored["last_error"] and stored["last_status"] == ""
    assert hooks.sync.zscore(wh.DEAD_LETTER_KEY, delivery_id) is not None


def test_output_reaches_the_receiver_but_not_the_worker_log(hooks: WebhookFleet) -> None:
    hooks.receiver.script("/quiet", 200)
    delivery_id = hooks.enqueue(hooks.receiver.url("/quiet"), [new_secret()])
    hooks.finished(delivery_id, "delivered")
    body = json.loads(hooks.receiver.seen("/quiet")[0].body)
    assert body["data"]["output"] == OUTPUT
    assert OUTPUT not in hooks.worker.output()
