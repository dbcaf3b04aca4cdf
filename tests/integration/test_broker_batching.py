"""workers.broker takes several messages per fetch and batches acks without weakening kombu's guarantees (against a
real redis-server, a database of each test's own)."""

from __future__ import annotations

import base64
import json

import redis
from kombu import Connection, Exchange, Producer, Queue

from workers.broker import Channel

QUEUE = "partner.batching-test"


def _connection(redis_url: str) -> Connection:
    return Connection(redis_url, transport="workers.broker:Transport")


def _publish(conn: Connection, count: int) -> None:
    queue = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)
    with conn.channel() as channel:
        producer = Producer(channel)
        for n in range(count):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=QUEUE, declare=[queue])


def _channel_with(conn: Connection, published: int, prefetch: int) -> Channel:
    """The connection's channel after `published` messages went to QUEUE, with this prefetch allowance."""
    _publish(conn, published)
    channel: Channel = conn.default_channel
    channel.qos.prefetch_count = prefetch
    return channel


def test_extra_messages_are_recorded_as_unacked_in_kombus_own_format(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with _connection(redis_url) as conn:
        channel = _channel_with(conn, 10, 5)
        taken = channel._take_more(QUEUE)
        assert len(taken) == 5  # the whole allowance: nothing is delivered yet (BRPOP's own message is, before a fetch)
        assert redis_client.llen(QUEUE) == 5
        unacked = redis_client.hgetall("unacked")
        assert len(unacked) == 5 and redis_client.zcard("unacked_index") == 5
        for payload in taken:
            stored, exchange, routing_key = json.loads(unacked[payload["properties"]["delivery_tag"]])
            assert stored == payload and exchange == QUEUE and routing_key == QUEUE
        # kombu's own restore path (what the visibility-timeout sweep uses) puts them back intact
        for payload in taken:
            channel.qos.restore_by_tag(payload["properties"]["delivery_tag"])
        assert redis_client.llen(QUEUE) == 10 and redis_client.hlen("unacked") == 0


def test_no_extra_messages_beyond_the_prefetch_allowance(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with _connection(redis_url) as conn:
        channel = _channel_with(conn, 3, 1)
        channel.qos._delivered["brpop-message"] = object()  # BRPOP's own message, delivered before any fetch
        assert channel._take_more(QUEUE) == []
        assert redis_client.llen(QUEUE) == 3 and redis_client.hlen("unacked") == 0


def test_batched_acks_leave_redis_together_and_plain_acks_at_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with _connection(redis_url) as conn:
        channel = _channel_with(conn, 4, 10)
        tags = [p["properties"]["delivery_tag"] for p in channel._take_more(QUEUE)]
        assert len(tags) == 4
        for tag in tags:
            channel.qos._delivered[tag] = object()  # as if delivered to a consumer
        channel.qos.ack(tags[0])  # no consumer event loop here: written at once
        assert redis_client.hlen("unacked") == 3
        conn.transport.acks_batched = True
        channel.qos.ack(tags[1])
        channel.qos.ack(tags[2])
        assert redis_client.hlen("unacked") == 3  # held until the consumer loop's flush
        conn.transport._flush_acks()
        assert redis_client.hkeys("unacked") == [tags[3]]
        assert redis_client.zrange("unacked_index", 0, -1) == [tags[3]]


def test_a_captured_publish_sends_nothing_and_yields_celerys_own_message(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """What the producer runs in the job's own MULTI: the LPUSH Celery would have sent, byte for byte."""
    from gateway_core.settings import Settings
    from workers.celery_app import RUN_JOB_TASK, make_celery
    from workers.enqueue import attempt_commands, send_attempt

    app = make_celery(Settings(redis_url=redis_url))
    commands = attempt_commands(app, [("job-captured", "sim-openai", 3)])
    assert redis_client.llen("partner.sim-openai") == 0  # nothing was sent
    [(name, key, raw)] = commands
    assert (name, key) == ("lpush", "partner.sim-openai")
    send_attempt(app, "job-captured", "sim-openai", 3)  # the same attempt, sent the ordinary way
    sent = json.loads(redis_client.rpop("partner.sim-openai"))
    captured = json.loads(raw)
    for message in (sent, captured):  # a random tag per message; everything a worker reads must be the same
        message["properties"].pop("delivery_tag")
    assert captured == sent
    assert captured["headers"]["task"] == RUN_JOB_TASK
    assert json.loads(base64.b64decode(captured["body"]))[1] == {"job_id": "job-captured", "partner": "sim-openai",
                                                                 "attempt": 3}


def test_a_captured_webhook_attempt_is_celerys_own_message_on_the_webhook_queue(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """What enqueue_webhook and the webhook mover run in their MULTI: the delivery task's message, queue `webhooks`."""
    from gateway_core.settings import Settings
    from gateway_core.webhooks.keys import DELIVER_TASK, WEBHOOK_QUEUE
    from workers.celery_app import make_celery
    from workers.enqueue import CeleryEnqueuer

    enqueuer = CeleryEnqueuer(make_celery(Settings(redis_url=redis_url)))
    [(name, key, raw)] = enqueuer.webhook_messages([("whd_captured", 2)])
    assert (name, key) == ("lpush", WEBHOOK_QUEUE) and redis_client.llen(WEBHOOK_QUEUE) == 0  # nothing was sent
    message = json.loads(raw)
    assert message["headers"]["task"] == DELIVER_TASK and message["headers"]["id"] == "whd_captured-2"
    assert json.loads(base64.b64decode(message["body"]))[1] == {"delivery_id": "whd_captured", "attempt": 2}


def test_the_delay_queue_mover_sends_due_entries_and_removes_them_in_one_step(
    redis_url: str, redis_client: redis.Redis
) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from gateway_core.fleet import keys
    from gateway_core.jobs.delay_queue import job_mover
    from gateway_core.settings import Settings
    from workers.celery_app import make_celery
    from workers.enqueue import CeleryEnqueuer

    app = make_celery(Settings(redis_url=redis_url))
    past, future = 1_000, 10**13
    redis_client.zadd(keys.delayed(keys.BATCH), {"job-a|sim-openai|2": past, "job-b|sim-anthropic|1": past,
                                                  "job-c|sim-openai|1": future})

    async def move() -> int:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            moved, _ = await job_mover(client, CeleryEnqueuer(app), keys.BATCH).move_due()
            return moved
        finally:
            await client.aclose()

    assert asyncio.run(move()) == 2
    assert redis_client.zrange(keys.delayed(keys.BATCH), 0, -1) == ["job-c|sim-openai|1"]  # not due yet: stays
    sent = {queue: [json.loads(base64.b64decode(json.loads(raw)["body"]))[1]
                    for raw in redis_client.lrange(queue, 0, -1)]
            for queue in ("partner.sim-openai.batch", "partner.sim-anthropic.batch")}
    assert sent == {"partner.sim-openai.batch": [{"job_id": "job-a", "partner": "sim-openai", "attempt": 2}],
                    "partner.sim-anthropic.batch": [{"job_id": "job-b", "partner": "sim-anthropic", "attempt": 1}]}
