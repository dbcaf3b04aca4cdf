"""Cancelling a job from the API: POST /v1/jobs/{id}/cancel, and a streaming client that went away."""

from __future__ import annotations

import dataclasses

from gateway_api.deps import Services
from gateway_core.jobs.models import JobStatus, now
from gateway_core.jobs.store import JobRecord, job_retention_s
from gateway_core.webhooks.queue import job_webhook, send_first_attempt

CANCELLED_BY_CLIENT = "cancelled by the client"


async def cancel(svc: Services, record: JobRecord) -> str:
    """Cancel `record`'s job unless it finished; its status before ('' when gone). The `job.cancelled` webhook is
    stored by the step that cancels (only the call that ends the job), and its first attempt sent right after."""
    cancelled = dataclasses.replace(record, status=JobStatus.CANCELLED, finished_at=now(), error=CANCELLED_BY_CLIENT)
    webhook = job_webhook(svc.store.cipher, svc.config, cancelled, svc.settings.job_ttl_s)
    before = await svc.store.cancel(record.id, retention_s=job_retention_s(svc.config, record), webhook=webhook)
    if before not in ("succeeded", "dead_lettered", "cancelled", "") and webhook is not None:
        await send_first_attempt(svc.redis, svc.producer.enqueuer, webhook.delivery_id)
    return before
