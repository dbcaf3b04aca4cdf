"""Tell the tenant a job finished: a signed webhook, when the job asked for one.

The delivery is written by the Redis step that settles the job (`webhook_for` builds it for JobStore.publish_success
and finish_unsuccessful), so a worker that dies right after settling cannot lose it; `send_webhook` then puts its
first attempt on queue `webhooks` at once (else the webhook mover sends it when its safety net is due).
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
import redis.exceptions

from gateway_core.config import GatewayConfig
from gateway_core.crypto import PayloadCipher
from gateway_core.jobs.store import JobRecord, WebhookWrite
from gateway_core.webhooks import queue
from workers.celery_app import get_app
from workers.enqueue import CeleryEnqueuer

log = logging.getLogger("fedgate.webhooks")


def webhook_for(cipher: PayloadCipher, config: GatewayConfig, record: JobRecord, ttl_s: int) -> WebhookWrite | None:
    """The webhook delivery of `record` as it is being settled (the job without its prompt); None without a URL."""
    return queue.job_webhook(cipher, config, record, ttl_s)


async def send_webhook(client: aioredis.Redis, webhook: WebhookWrite | None) -> None:
    """Send the first attempt of a delivery the settle step stored. A store that fails here is not the job's
    failure: the job is settled and its delivery is stored, whose safety net the webhook mover sends."""
    if webhook is None:
        return
    try:
        await queue.send_first_attempt(client, CeleryEnqueuer(get_app()), webhook.delivery_id)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("webhook %s: first attempt not sent now (%s); the mover will send it", webhook.delivery_id,
                    exc.__class__.__name__)
