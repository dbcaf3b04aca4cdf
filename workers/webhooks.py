"""The webhook delivery task: one attempt of a stored delivery (gateway_core.webhooks.delivery) in a worker.

Declared with `shared_task` (workers.celery_app lists this module in `include`); the retry mover beside it is
started with the job movers (workers.tasks). Everything else about webhooks is gateway_core.webhooks.
"""

from __future__ import annotations

import logging

import redis
from celery import shared_task
from celery.exceptions import Reject

from gateway_core.webhooks.delivery import dead_letter, deliver, http_client
from gateway_core.webhooks.destinations import allow_list
from gateway_core.webhooks.keys import DELIVER_TASK
from gateway_core.webhooks.signing import tenant_secrets
from workers.bridge import await_
from workers.runtime import runtime

log = logging.getLogger("fedgate.webhooks")

INFRASTRUCTURE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


async def deliver_in_worker(delivery_id: str, attempt: int) -> str:
    """`deliver` with the worker's Redis client, cipher, config and per-loop HTTP client."""
    rt = runtime()
    home = rt.settings.home_dir()

    def secrets_for(tenant: str) -> list[str]:
        return tenant_secrets(rt.config.tenants.get(tenant), home)

    return await deliver(
        rt.redis, rt.store.cipher, delivery_id, attempt,
        allow=allow_list(rt.config, rt.settings), secrets_for=secrets_for,
        http=http_client(rt.settings.worker_concurrency),
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
