"""Webhook attempts one at a time, in this process, against real loopback receivers and a real Redis (a database of
each test's own): the total deadline of an attempt, and the per-tenant slots that cap deliveries in flight."""

from __future__ import annotations

import asyncio
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from gateway_core import webhooks as wh
from gateway_core.crypto import PayloadCipher
from gateway_core.fleet.lua import script
from gateway_core.jobs.models import new_job_id
from gateway_core.webhooks import WebhookEvent, WebhookSettings, delivery, new_secret, queue
from gateway_core.webhooks.keys import in_flight_key, parked_key
from tests.helpers import wait_for, with_redis
from tests.unit.test_webhooks import job_view

ALLOW = ["127.0.0.0/8"]
DRIP_EVERY_S = 0.3


# --- a receiver that drips its answer ----------------------------------------------------------------------------


@dataclass
class DripReceiver:
    """Answers `HTTP/1.1 200 OK` and then one byte of a header every DRIP_EVERY_S, forever: every read gets a byte
    long before any per-read timeout, so only a total deadline ends the exchange. `heal()` makes it finish the
    answers it is dripping, and answer new requests at once. Counts the requests it holds open at once."""

    port: int = 0
    healed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    open_now: int = 0
    most_open: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    held_for_s: list[float] = field(default_factory=list)  # how long each dripped exchange lasted, client-side cut

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def heal(self) -> None:
        self.healed.set()

    def seen(self) -> int:
        with self.lock:
            return len(self.requests)

    def holding(self) -> int:
        with self.lock:
            return self.open_now


def _read_request(stream: Any) -> dict[str, str]:
    stream.readline()  # the request line
    headers: dict[str, str] = {}
    while True:
        line = stream.readline().decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    stream.read(int(headers.get("content-length") or 0))
    return headers


@pytest.fixture()
def drip() -> Iterator[DripReceiver]:
    receiver = DripReceiver()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            headers = _read_request(self.rfile)
            with receiver.lock:
                receiver.requests.append(headers)
                receiver.open_now += 1
                receiver.most_open = max(receiver.most_open, receiver.open_now)
            started = time.monotonic()
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                if not receiver.healed.is_set():
                    self.wfile.write(b"x-drip: ")
                    while not receiver.healed.is_set():
                        # Sees the client hang up at once (its deadline), not at the next byte written.
                        readable, _, _ = select.select([self.connection], [], [], DRIP_EVERY_S)
                        if readable and not self.connection.recv(1):
                            raise ConnectionResetError("the client hung up")
                        self.wfile.write(b"a")
                        self.wfile.flush()
                    self.wfile.write(b"\r\n")
                self.wfile.write(b"content-length: 0\r\nconnection: close\r\n\r\n")
            except OSError:  # the client hung up: its deadline
                with receiver.lock:
                    receiver.held_for_s.append(time.monotonic() - started)
                    receiver.open_now -= 1
            else:
                with receiver.lock:
                    receiver.open_now -= 1

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, name="drip-receiver", daemon=True).start()
    try:
        yield receiver
    finally:
        receiver.heal()
        server.shutdown()
        server.server_close()


# --- deliveries on this test's database --------------------------------------------------------------------------


class StubEnqueuer:
    """The first attempt's message as an LPUSH to a list of the test's own (these tests make attempts by hand)."""

    def __init__(self) -> None:
        self.key = f"test:webhook-messages:{new_job_id()}"

    def job_messages(self, attempts: Iterable[tuple[str, str, int]], lane: str = "") -> list[tuple[Any, ...]]:
        raise AssertionError("webhooks send no job messages")

    def webhook_messages(self, attempts: Iterable[tuple[str, int]]) -> list[tuple[Any, ...]]:
        return [("lpush", self.key, f"{delivery_id}:{attempt}") for delivery_id, attempt in attempts]


class Env:
    def __init__(self, url: str) -> None:
        self.url = url
        self.cipher = PayloadCipher([Fernet.generate_key()])
        self.enqueuer = StubEnqueuer()
        self.sync = redis.Redis.from_url(url, decode_responses=True)

    def enqueue(self, url: str, tenant: str = "t1") -> str:
        event = WebhookEvent.for_job(job_view())

        async def go(client: aioredis.Redis) -> str:
            return await queue.enqueue_webhook(
                client, self.cipher, tenant=tenant, url=url, event=event,
                msg_id=wh.job_message_id(new_job_id(), event.type), secrets=[new_secret()], enqueuer=self.enqueuer,
                settings=WebhookSettings(max_attempts=3, base_delay_s=0.05, max_delay_s=0.1))

        return with_redis(self.url, go)

    def deliver(self, delivery_id: str, attempt: int, *, timeout_s: float, max_in_flight: int | None = None,
                give_up_after_s: float = 15.0) -> tuple[str, float]:
        """(the attempt's summary, seconds it took); fails the test if it is still going after give_up_after_s."""

        async def go(client: aioredis.Redis) -> str:
            return await asyncio.wait_for(
                delivery.deliver(client, self.cipher, delivery_id, attempt, allow=ALLOW, timeout_s=timeout_s,
                                 max_in_flight=max_in_flight),
                give_up_after_s,
            )

        started = time.monotonic()
        return with_redis(self.url, go), time.monotonic() - started

    def hash(self, delivery_id: str) -> dict[str, str]:
        return self.sync.hgetall(wh.delivery_key(delivery_id))  # type: ignore[return-value]

    def due_in_s(self, member: str) -> float | None:
        score = self.sync.zscore(wh.DELAYED_KEY, member)
        if score is None:
            return None
        seconds, micros = self.sync.time()  # type: ignore[misc]
        return (score - (seconds * 1000 + micros // 1000)) / 1000


@pytest.fixture()
def env(redis_url: str) -> Iterator[Env]:
    found = Env(redis_url)
    yield found
    found.sync.close()


# --- the total deadline ------------------------------------------------------------------------------------------


def test_a_dripping_receiver_is_cut_at_the_deadline_and_the_attempt_is_retried(env: Env, drip: DripReceiver) -> None:
    delivery_id = env.enqueue(drip.url())
    summary, took = env.deliver(delivery_id, 1, timeout_s=1.0)
    assert summary.startswith("attempt 1 failed (no answer within the 1s deadline); retry in"), summary
    assert 1.0 <= took < 1.0 + 2.0, f"the attempt took {took:.2f}s for a 1s deadline"
    stored = env.hash(delivery_id)
    assert stored["state"] == "pending" and stored["next_attempt"] == "2" and stored["last_status"] == ""
    assert "deadline" in stored["last_error"]
    assert env.due_in_s(f"{delivery_id}:2") is not None  # the retry waits in the delay queue
    wait_for(lambda: drip.holding() == 0, 5, what="the receiver to see the connection closed")
    assert drip.held_for_s and drip.held_for_s[0] < 3.0, drip.held_for_s

    drip.heal()  # the receiver answers now: attempt 2 delivers
    summary, _ = env.deliver(delivery_id, 2, timeout_s=1.0)
    assert summary == "delivered (HTTP 200) on attempt 2"
    assert env.hash(delivery_id)["state"] == "delivered" and drip.seen() == 2


def test_the_deadline_covers_a_receiver_that_never_answers_too(env: Env) -> None:
    with socket.socket() as silent:  # accepts (the kernel does) and never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        delivery_id = env.enqueue(f"http://127.0.0.1:{silent.getsockname()[1]}/hook")
        summary, took = env.deliver(delivery_id, 1, timeout_s=0.5)
    assert "no answer within the 0.5s deadline" in summary and took < 2.5


# --- the per-tenant cap ------------------------------------------------------------------------------------------


def test_an_attempt_over_its_tenants_cap_is_parked_in_the_delay_queue_not_sent(env: Env, drip: DripReceiver) -> None:
    """Two of t1's attempts hold its two slots (dripping receivers); the third is parked at once, unsent, and a
    tenant with free slots is not affected."""
    held = [env.enqueue(drip.url()) for _ in range(2)]
    third = env.enqueue(drip.url())

    async def scenario(client: aioredis.Redis) -> tuple[list[str], str, float]:
        async def one(delivery_id: str) -> str:
            return await delivery.deliver(client, env.cipher, delivery_id, 1, allow=ALLOW, timeout_s=10,
                                          max_in_flight=2)

        running = [asyncio.create_task(one(d)) for d in held]
        deadline = time.monotonic() + 10
        while drip.holding() < 2:  # both attempts are at the receiver, holding t1's slots
            assert time.monotonic() < deadline, "the first two attempts never reached the receiver"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        parked = await one(third)
        took = time.monotonic() - started
        drip.heal()
        return list(await asyncio.gather(*running)), parked, took

    finished, parked, took = with_redis(env.url, scenario)
    assert parked.startswith("parked: attempt 1 waits in the delay queue"), parked
    assert took < 1.0, f"a parked attempt took {took:.2f}s: it must not wait in the worker"
    assert drip.seen() == 2 and drip.most_open == 2  # the third never reached the receiver
    assert all(s.startswith("delivered") for s in finished), finished
    stored = env.hash(third)
    assert stored["state"] == "pending" and stored["next_attempt"] == "1" and stored["attempts"] == "0"
    # Parked, and due again: at once, woken by the first slot released (else after a lease's length at the latest).
    due = env.due_in_s(f"{third}:1")
    assert due is not None and due <= 0.5, due
    assert env.sync.zcard(in_flight_key("t1")) == 0  # both slots given back


def test_slots_are_per_tenant_leased_and_woken_in_order(env: Env) -> None:
    """The slot scripts alone: a full tenant does not block another; a release wakes the longest-parked attempt;
    a slot whose holder died (its lease ran out) is free again; a duplicate of an attempt in flight is parked."""
    take, release = env.sync.register_script(script("webhook_slot_take")), env.sync.register_script(
        script("webhook_slot_release"))

    def slot(tenant: str, member: str, lease_ms: int = 60_000) -> int:
        return int(take(keys=[in_flight_key(tenant), parked_key(tenant), wh.DELAYED_KEY],  # type: ignore[arg-type]
                        args=[member, 2, lease_ms, 60_000, 60_000]))

    assert [slot("a", "d1:1"), slot("a", "d2:1"), slot("a", "d3:1"), slot("a", "d4:1")] == [1, 1, 0, 0]
    assert slot("b", "e1:1") == 1  # another tenant's slots are its own
    assert slot("b", "e1:1") == -1  # the same attempt twice: parked, not sent twice
    parked_due = env.due_in_s("d3:1")
    assert parked_due is not None and parked_due > 30  # parked: due after the fallback unless woken

    assert release(keys=[in_flight_key("a"), parked_key("a"), wh.DELAYED_KEY], args=["d1:1"]) == "d3:1"
    woken = env.due_in_s("d3:1")
    assert woken is not None and woken <= 0, "the oldest parked attempt is due at once"
    assert slot("a", "d3:1") == 1  # woken, it takes the freed slot and leaves the parked set
    assert env.sync.zrange(parked_key("a"), 0, -1) == ["d4:1"]

    # A holder that died: its slot's lease runs out and the slot is free again.
    assert slot("c", "f1:1", lease_ms=50) == 1 and slot("c", "f2:1", lease_ms=50) == 1
    assert wait_for(lambda: slot("c", "f3:1") == 1, 5, what="the dead holders' leases to run out")
    assert env.sync.pttl(in_flight_key("c")) > 0  # the set itself expires with its last lease
