"""Tell the tenant a job finished: a signed webhook, when the job asked for one (sent through this worker's app)."""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway_core.config import GatewayConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.jobs.store import JobRecord
from gateway_core.webhooks import queue
from workers.celery_app import get_app
from workers.enqueue import CeleryEnqueuer


async def notify_finished(
    client: aioredis.Redis, cipher: PayloadCipher, config: GatewayConfig, record: JobRecord, ttl_s: int
) -> str | None:
    """Queue the job's webhook (the finished job without its prompt); the delivery id, or None without a URL."""
    return await queue.notify_finished(client, cipher, config, record, ttl_s, CeleryEnqueuer(get_app()))
