"""Tell the tenant a job finished: a signed webhook, when the job asked for one."""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway_core.config import GatewayConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.jobs.store import JobRecord
from gateway_core.webhooks import WebhookEvent, job_message_id
from workers.webhooks import enqueue_webhook


async def notify_finished(
    client: aioredis.Redis, cipher: PayloadCipher, config: GatewayConfig, record: JobRecord, ttl_s: int
) -> str | None:
    """Queue the job's webhook (the finished job without its prompt); the delivery id, or None without a URL."""
    if not record.webhook_url:
        return None
    event = WebhookEvent.for_job(record.view())
    return await enqueue_webhook(
        client, cipher, tenant=record.tenant, url=record.webhook_url, event=event,
        msg_id=job_message_id(record.id, event.type), settings=config.webhooks, ttl_s=ttl_s,
    )
