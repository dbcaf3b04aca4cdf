"""The webhook delivery task: one attempt of a stored delivery (gateway_core.webhooks.delivery) in a webhook worker.

Deliveries travel on queue `webhooks`, which only webhook workers consume (`fedgate webhook-worker`): a partner
worker never holds one, so a slow receiver cannot take a partner call's place. Each attempt has a total deadline
(FEDGATE_WEBHOOK_TIMEOUT_S) and takes one of its tenant's slots (FEDGATE_WEBHOOK_MAX_IN_FLIGHT_PER_TENANT) or waits
in the webhook delay queue. A worker that consumes `webhooks` also runs the webhook delay queue's mover.

Declared with `shared_task` (workers.celery_app lists this module in `include`). Everything else about webhooks is
gateway_core.webhooks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis
from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_ready

from gateway_core.webhooks.delivery import dead_letter, deliver, http_client
from gateway_core.webhooks.destinations import allow_list
from gateway_core.webhooks.keys import DELIVER_TASK, WEBHOOK_QUEUE
from gateway_core.webhooks.queue import webhook_mover
from gateway_core.webhooks.signing import tenant_secrets
from workers.bridge import await_, io_loop
from workers.celery_app import get_app
from workers.enqueue import CeleryEnqueuer
from workers.runtime import runtime

log = logging.getLogger("fedgate.webhooks")

# The store or broker failed (unreachable, out of memory, read-only after a failover): the attempt goes back to the
# queue and is never acknowledged as done.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)


async def deliver_in_worker(delivery_id: str, attempt: int) -> str:
    """`deliver` with the worker's Redis client, cipher, config, deadline, tenant cap and per-loop HTTP client."""
    rt = runtime()
    home = rt.settings.home_dir()

    def secrets_for(tenant: str) -> list[str]:
        return tenant_secrets(rt.config.tenants.get(tenant), home)

    return await deliver(
        rt.redis, rt.store.cipher, delivery_id, attempt,
        allow=allow_list(rt.config, rt.settings), secrets_for=secrets_for,
        http=http_client(rt.settings.worker_concurrency), timeout_s=rt.settings.webhook_timeout_s,
        max_in_flight=rt.settings.webhook_max_in_flight_per_tenant,
    )


@shared_task(name=DELIVER_TASK, acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: str, attempt: int) -> str:
    try:
        return await_(deliver_in_worker(delivery_id, attempt))
    except INFRASTRUCTURE_ERRORS as exc:
        log.warning("webhook %s attempt %s: store unreachable (%s); requeued", delivery_id, attempt,
                    exc.__class__.__name__)
        raise Reject(exc.__class__.__name__, requeue=True) from None
    except Exception as exc:
        log.exception("webhook %s attempt %s failed inside the worker; dead-lettering it", delivery_id, attempt)
        try:
            error = f"internal error in the worker ({exc.__class__.__name__})"
            return await_(dead_letter(runtime().redis, delivery_id, attempt, error))
        except INFRASTRUCTURE_ERRORS:
            raise Reject("store unreachable while dead-lettering", requeue=True) from None


def consumes_webhooks(consumer: Any) -> bool:
    """Whether this worker reads queue `webhooks` (False when it cannot tell)."""
    try:
        return any(queue.name == WEBHOOK_QUEUE for queue in consumer.task_consumer.queues)
    except AttributeError:
        return False


@worker_ready.connect
def _start_webhook_mover(sender: Any = None, **_: object) -> None:
    """A webhook worker moves the webhook delay queue (retries, parked attempts, first attempts' safety nets)."""
    if consumes_webhooks(sender):
        asyncio.run_coroutine_threadsafe(_run_webhook_mover(), io_loop())


async def _run_webhook_mover() -> None:
    await webhook_mover(runtime().redis, CeleryEnqueuer(get_app())).run_forever()
