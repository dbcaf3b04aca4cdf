"""workers.broker: the message a BRPOP takes has its unacked record before the extra fetch runs, so that fetch (which
takes more messages and records them in one Lua step) can fail, or the worker die during it, without losing it.

Driven through kombu's own polling (`Connection.drain_events`) on a real redis-server, on this test's database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.broker import Channel

QUEUE = "partner.fetch-order-test"


@pytest.fixture()
def connection(redis_url: str) -> Iterator[Connection]:
    with Connection(redis_url, transport="workers.broker:Transport") as conn:
        yield conn


def _publish(conn: Connection, count: int) -> Queue:
    queue = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)
    with conn.channel() as channel:
        producer = Producer(channel)
        for n in range(count):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=QUEUE, declare=[queue])
    return queue


def _consume(conn: Connection, queue: Queue, prefetch: int) -> tuple[Channel, list[Any]]:
    """A consumer on `queue` with this prefetch; returns the channel and the list messages are delivered to."""
    delivered: list[Any] = []
    channel: Channel = conn.default_channel
    consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, message: delivered.append(message)],
                        accept=["json"])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    return channel, delivered


def _unacked_tags(client: redis.Redis) -> set[str]:
    return set(client.hkeys("unacked"))


def test_the_extra_fetch_runs_after_the_brpop_message_is_recorded(
    connection: Connection, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _publish(connection, 5)
    channel, delivered = _consume(connection, queue, prefetch=3)
    seen_at_fetch: list[tuple[int, set[str]]] = []
    real_take_more = Channel._take_more

    def observed(self: Channel, key: str) -> list[dict[str, Any]]:
        seen_at_fetch.append((len(delivered), _unacked_tags(redis_client)))
        return real_take_more(self, key)

    monkeypatch.setattr(Channel, "_take_more", observed)
    connection.drain_events(timeout=5)

    assert len(seen_at_fetch) == 1
    handed_over, recorded = seen_at_fetch[0]
    first = delivered[0].delivery_tag
    assert handed_over == 1 and recorded == {first}  # BRPOP's message delivered and recorded before the fetch
    # then the fetch took the rest of the prefetch allowance (3 in all), each recorded in the step that took it
    assert len(delivered) == 3 and _unacked_tags(redis_client) == {m.delivery_tag for m in delivered}
    assert redis_client.llen(QUEUE) == 2
    for stored in redis_client.hvals("unacked"):
        message, exchange, routing_key = json.loads(stored)
        assert (exchange, routing_key) == (QUEUE, QUEUE) and message["properties"]["delivery_tag"]
    assert channel.qos.can_consume_max_estimate() == 0


def test_a_failing_extra_fetch_loses_nothing(
    connection: Connection, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _publish(connection, 3)
    channel, delivered = _consume(connection, queue, prefetch=10)

    def broken(self: Channel, key: str) -> list[dict[str, Any]]:
        raise RedisConnectionError("the connection dropped during the extra fetch")

    monkeypatch.setattr(Channel, "_take_more", broken)
    connection.drain_events(timeout=5)

    # the message BRPOP took is delivered and in the unacked record (kombu restores it if it is never acked)...
    assert len(delivered) == 1
    assert _unacked_tags(redis_client) == {delivered[0].delivery_tag}
    # ...and the others are still queued: every message is in the queue or in the unacked record
    assert redis_client.llen(QUEUE) == 2
    channel.qos.restore_by_tag(delivered[0].delivery_tag)
    assert redis_client.llen(QUEUE) == 3 and redis_client.hlen("unacked") == 0
