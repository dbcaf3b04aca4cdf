"""Webhook deliveries in Redis: storing one and sending its first attempt, the retry mover, replays, status.

A delivery lives in the hash `fg:webhook:{delivery_id}` (url, tenant, message id, retry settings, the event body
encrypted with the job store's cipher). Queue messages carry `delivery_id` and `attempt` only, on queue `webhooks`,
which only the webhook workers consume (`fedgate webhook-worker`). A finished job's delivery is stored by the very
Redis step that settles the job (`job_webhook`, read by the settle scripts), with a safety-net entry for its first
attempt in the delay queue; the worker then sends the first attempt at once (`send_first_attempt`), or, if it died
first, the mover sends it when the safety net is due.

Retries wait in the sorted set `fg:webhooks:delayed` (member `delivery_id:attempt`, score due ms by Redis TIME),
which the webhook workers' delay-queue mover (`webhook_mover`) sends back to the queue when due: no countdown/ETA
task ever waits in worker memory. Attempts over their tenant's cap on deliveries in flight wait there too
(gateway_core.webhooks.delivery). An attempt is finalised atomically and only once, so a redelivered or duplicated
message can repeat a POST (receivers deduplicate on `webhook-id`, as the spec expects) but never forks the retry
schedule. Exhausted (or refused, or 410 Gone) deliveries land in the sorted set `fg:webhooks:dlq`.

A delivery's atomic steps (enqueue, slots, finalise, replay) are gateway_core/fleet/lua/webhook_*.lua.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import cast

import redis.asyncio as aioredis

from gateway_core.config import GatewayConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.fleet.lua import script
from gateway_core.jobs.delay_queue import DelayQueueMover
from gateway_core.jobs.enqueuer import Enqueuer, RedisCommand, stage
from gateway_core.jobs.store import JobRecord, WebhookWrite
from gateway_core.webhooks.events import WebhookEvent, job_message_id
from gateway_core.webhooks.keys import DEAD_LETTER_KEY, DELAYED_KEY, delivery_key
from gateway_core.webhooks.policy import WebhookSettings

log = logging.getLogger("fedgate.webhooks")

DEFAULT_TTL_S = 7 * 24 * 3600
SAFETY_NET_MS = 30_000  # the first attempt is re-sent by the mover if the producer dies before sending it
MOVER_MAX_IDLE_S = 0.25  # nothing wakes the webhook mover early: it looks this often


def delivery_id_for(tenant: str, msg_id: str) -> str:
    """Deterministic: enqueueing the same message for the same tenant twice yields one delivery."""
    return "whd_" + hashlib.sha256(f"{tenant}\n{msg_id}".encode()).hexdigest()[:24]


def _delivery_fields(
    cipher: PayloadCipher, *, tenant: str, url: str, event: WebhookEvent, msg_id: str,
    secrets: Sequence[str] | None, settings: WebhookSettings | None,
) -> dict[str, str]:
    """A new delivery's hash (the body and any secrets encrypted), waiting for its first attempt."""
    policy = settings or WebhookSettings()
    fields = {
        "state": "pending",
        "tenant": tenant,
        "url": url,
        "msg_id": msg_id,
        "type": event.type,
        "body": cipher.encrypt(event.body().decode()).decode(),
        "next_attempt": "1",
        "first_attempt": "1",
        "attempts": "0",
        "max_attempts": str(policy.max_attempts),
        "base_delay_s": repr(policy.base_delay_s),
        "max_delay_s": repr(policy.max_delay_s),
    }
    if secrets:
        fields["secrets"] = cipher.encrypt(json.dumps(list(secrets))).decode()
    return fields


def first_member(delivery_id: str) -> str:
    """The delay-queue entry of a delivery's first attempt (its safety net until the first message is sent)."""
    return f"{delivery_id}:1"


async def send_first_attempt(redis_client: aioredis.Redis, enqueuer: Enqueuer, delivery_id: str) -> bool:
    """Put a stored delivery's first attempt on queue `webhooks` now and remove its safety-net entry, in one MULTI:
    one of the two is always there to send it. False when the broker cannot be reached to build the message (the
    safety net sends it when due)."""
    try:
        commands = enqueuer.webhook_messages([(delivery_id, 1)])
    except Exception as exc:  # the safety-net entry sends it once the broker is back
        log.warning("webhook %s: first attempt not sent now (%s); the mover will send it", delivery_id,
                    exc.__class__.__name__)
        return False
    async with redis_client.pipeline(transaction=True) as pipe:
        stage(pipe, commands)
        pipe.zrem(DELAYED_KEY, first_member(delivery_id))
        await pipe.execute()
    return True


async def enqueue_webhook(
    redis_client: aioredis.Redis,
    cipher: PayloadCipher,
    *,
    tenant: str,
    url: str,
    event: WebhookEvent,
    msg_id: str,
    enqueuer: Enqueuer,
    secrets: Sequence[str] | None = None,
    settings: WebhookSettings | None = None,
    ttl_s: int = DEFAULT_TTL_S,
) -> str:
    """Store a delivery and send its first attempt to queue `webhooks`; returns the delivery id.

    `secrets` (newest first) are stored encrypted and sign every attempt; leave them out to sign with the
    tenant's configured secrets at delivery time (so a rotation applies to retries already scheduled).
    `settings` gives the retry schedule (default: WebhookSettings()). Idempotent per (tenant, msg_id).
    The Redis client must use decode_responses=True. A finished job's webhook is stored by the step that settles
    the job instead (`job_webhook`), so no crash can come between them.
    """
    delivery_id = delivery_id_for(tenant, msg_id)
    fields = _delivery_fields(cipher, tenant=tenant, url=url, event=event, msg_id=msg_id, secrets=secrets,
                              settings=settings)
    flat = [item for pair in fields.items() for item in pair]
    created = await redis_client.eval(
        script("webhook_enqueue"), 2, delivery_key(delivery_id), DELAYED_KEY, ttl_s * 1000, SAFETY_NET_MS,
        first_member(delivery_id), *flat,
    )
    if int(created):  # else already enqueued: its own first attempt (or safety net) is on its way
        await send_first_attempt(redis_client, enqueuer, delivery_id)
    return delivery_id


def job_webhook(
    cipher: PayloadCipher, config: GatewayConfig, record: JobRecord, ttl_s: int, *, safety_net_ms: int = SAFETY_NET_MS
) -> WebhookWrite | None:
    """The delivery of a job's webhook for the step that settles it (JobStore.publish_success / finish_unsuccessful
    store it with the job's final status, atomically); None when the job has no webhook.

    `record` is the job as it is being settled (final status, output, error, finished_at): the body is its view,
    never the prompt. After the settle, `send_first_attempt` sends it at once; if the settling process dies first,
    the safety-net entry written with it is sent by the webhook mover `safety_net_ms` later.
    """
    if not record.webhook_url:
        return None
    event = WebhookEvent.for_job(record.view())
    msg_id = job_message_id(record.id, event.type)
    delivery_id = delivery_id_for(record.tenant, msg_id)
    fields = _delivery_fields(cipher, tenant=record.tenant, url=record.webhook_url, event=event, msg_id=msg_id,
                              secrets=None, settings=config.webhooks)
    spec = {
        "fields": [item for pair in fields.items() for item in pair],
        "ttl_ms": ttl_s * 1000,
        "safety_net_ms": safety_net_ms,
        "member": first_member(delivery_id),
    }
    return WebhookWrite(delivery_id, (delivery_key(delivery_id), DELAYED_KEY), json.dumps(spec))


def webhook_mover(client: aioredis.Redis, enqueuer: Enqueuer) -> DelayQueueMover:
    """The delay-queue mover for webhook retries (members `delivery_id:attempt`) to queue `webhooks`."""

    def messages(due: Sequence[str]) -> list[RedisCommand]:
        attempts = [str(member).rpartition(":") for member in due]
        return enqueuer.webhook_messages([(delivery_id, int(attempt)) for delivery_id, _, attempt in attempts])

    return DelayQueueMover(client, DELAYED_KEY, messages, name="webhook", max_idle_s=MOVER_MAX_IDLE_S)


async def replay_webhook(redis_client: aioredis.Redis, delivery_id: str, ttl_s: int = DEFAULT_TTL_S) -> bool:
    """Send a dead-lettered delivery again (same webhook-id, retries counted afresh); False if not replayable."""
    replayed = await redis_client.eval(
        script("webhook_replay"), 3, delivery_key(delivery_id), DELAYED_KEY, DEAD_LETTER_KEY, delivery_id,
        ttl_s * 1000,
    )
    return bool(int(replayed))


SAFE_FIELDS = (
    "state", "tenant", "url", "msg_id", "type", "attempts", "max_attempts", "last_status", "last_error",
    "created_at_ms", "last_attempt_at_ms", "delivered_at_ms", "dead_lettered_at_ms",
)


async def describe_delivery(redis_client: aioredis.Redis, delivery_id: str) -> dict[str, str] | None:
    """A delivery's status for operators and tenants: never the body or the secrets."""
    raw = cast(dict[str, str], await redis_client.hgetall(delivery_key(delivery_id)))
    if not raw:
        return None
    return {"id": delivery_id, **{k: raw[k] for k in SAFE_FIELDS if k in raw}}
