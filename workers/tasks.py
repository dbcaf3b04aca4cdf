"""The job task, and what a worker starts beside it. Arguments are ids only: job id, partner, attempt number;
never content.

Declared with `shared_task`: importing this module builds no app; the task attaches to the app the worker runs
(workers.celery_app lists this module in `include`)."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_init, worker_ready, worker_shutdown

from gateway_core.fleet import keys, metrics
from gateway_core.fleet.periodic import repeat_forever
from gateway_core.fleet.redis_clients import sync_client
from gateway_core.jobs import retention, run_owners
from gateway_core.jobs.delay_queue import job_mover
from gateway_core.jobs.enqueuer import Enqueuer
from gateway_core.jobs.sweeper import Sweeper
from gateway_core.redaction import PlaceholderMap
from gateway_core.settings import get_settings
from gateway_core.tenants import metering
from workers import pipeline
from workers.bridge import await_, io_loop
from workers.call_slots import WorkerStopping
from workers.celery_app import RUN_JOB_TASK, get_app
from workers.enqueue import CeleryEnqueuer
from workers.runtime import runtime

log = logging.getLogger("fedgate.worker")

GC_YOUNG_THRESHOLD = 50_000
BREAKER_FLUSH_INTERVAL_S = 0.25

# The job store or broker failed: the job is not lost, it goes back to the queue (or, if even that cannot be
# written, stays unacked and returns after the visibility timeout).
INFRASTRUCTURE_ERRORS = pipeline.INFRASTRUCTURE_ERRORS


@shared_task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)
def run_job(job_id: str, partner: str, attempt: int) -> str:
    try:
        return await_(pipeline.run_job(job_id, partner, attempt))
    except WorkerStopping:
        raise Reject("worker stopping before the partner call", requeue=True) from None
    except INFRASTRUCTURE_ERRORS as exc:
        log.warning("job %s attempt %s: store unreachable (%s); requeued", job_id, attempt, exc.__class__.__name__)
        raise Reject(exc.__class__.__name__, requeue=True) from None
    except Exception as exc:
        # The pipeline retries its own failures through the router; one that escapes even that (a failure while
        # routing) must not leave the job 'running' forever: dead-letter it with the reason.
        log.exception("job %s attempt %s failed inside the worker; dead-lettering it", job_id, attempt)
        try:
            return await_(pipeline.dead_letter_internal_error(job_id, partner, attempt, exc))
        except INFRASTRUCTURE_ERRORS:
            raise Reject("store unreachable while dead-lettering", requeue=True) from None


@worker_ready.connect
def _start_background_work(sender: Any = None, **_: object) -> None:
    enqueuer = CeleryEnqueuer(get_app())  # the app this worker runs (fedgate worker, celery -A workers.celery_app)
    lanes = lanes_consumed(sender)
    for lane in lanes:
        asyncio.run_coroutine_threadsafe(_run_mover(lane, enqueuer), io_loop())
    if keys.INTERACTIVE in lanes:
        asyncio.run_coroutine_threadsafe(_sweep_retention(), io_loop())
    asyncio.run_coroutine_threadsafe(_flush_breaker_counts(), io_loop())
    asyncio.run_coroutine_threadsafe(_flush_metric_events(), io_loop())
    asyncio.run_coroutine_threadsafe(_flush_usage(), io_loop())
    asyncio.run_coroutine_threadsafe(_sweep_lost_messages(), io_loop())
    asyncio.run_coroutine_threadsafe(_keep_alive(), io_loop())


@worker_shutdown.connect
def _flush_usage_at_exit(**_: object) -> None:
    """The I/O loop has stopped: write the last usage counts with a short-lived synchronous client."""
    client = sync_client(get_settings(), socket_timeout=5)
    try:
        metering.flush_usage_sync(client)
    except INFRASTRUCTURE_ERRORS as exc:
        log.warning("could not write the last usage counts (%s)", exc.__class__.__name__)
    finally:
        client.close()


@worker_init.connect
def _warm_up(sender: Any = None, **_: object) -> None:
    """Build the runtime (config, redactors, adapters) before the first job, not in its critical path; a worker
    that reads no partner queue (a webhook worker) needs no redactor or adapter."""
    metrics.start_worker_metrics_server()
    asyncio.run_coroutine_threadsafe(_build(calls_partners=_reads_partner_queues(sender)), io_loop()).result(120)
    _tune_gc()


def _reads_partner_queues(worker: Any) -> bool:
    """Whether the starting worker reads any partner queue (True when it cannot tell)."""
    try:
        names = list(worker.app.amqp.queues.consume_from or ())
    except AttributeError:
        return True
    return not names or any(keys.lane_of_queue(name) is not None for name in names)


def _tune_gc() -> None:
    """Python's default collects the young generation every 700 allocations; a worker with a thousand calls in
    flight allocates that in well under a millisecond, and full collections walk every live object. Objects built
    at start-up are frozen out of collection, and collections are made rarer (py-spy/CPU per job: -15 %)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)


async def _build(calls_partners: bool = True) -> None:
    rt = runtime()
    if not calls_partners:
        return
    for partner in rt.config.partners:
        rt.redactors[partner].redact("warm-up a@b.co", PlaceholderMap())
    _ = rt.adapters


def lanes_consumed(consumer: Any) -> list[str]:
    """The lanes whose queues this worker reads (from its queue names; both when it cannot tell; none for a worker
    that reads no partner queue, a webhook worker: workers.webhooks runs what it needs)."""
    try:
        names = [queue.name for queue in consumer.task_consumer.queues]
    except AttributeError:
        return list(keys.LANES)
    lanes = [lane for lane in keys.LANES if any(keys.lane_of_queue(name) == lane for name in names)]
    return lanes if names else list(keys.LANES)


async def _run_mover(lane: str, enqueuer: Enqueuer) -> None:
    await job_mover(runtime().redis, enqueuer, lane).run_forever()


async def _sweep_retention() -> None:
    await retention.sweep_forever(runtime().store)


async def _flush_metric_events() -> None:
    await metrics.flush_events_forever(runtime().redis)


async def _flush_usage() -> None:
    await metering.flush_usage_forever(runtime().redis)


async def _keep_alive() -> None:
    """This worker's heartbeat: while it beats, the sweeper leaves the jobs it runs alone (run_owners)."""
    rt = runtime()
    assert rt.store.run_owner is not None
    await run_owners.heartbeat_forever(rt.redis, rt.store.run_owner)


async def _sweep_lost_messages() -> None:
    """Every worker runs a sweeper; a lock keeps one sweeping at a time (gateway_core.jobs.sweeper)."""
    rt = runtime()
    await Sweeper(rt.redis, visibility_timeout_s=rt.settings.visibility_timeout_s).sweep_forever()


async def _flush_breaker_counts() -> None:
    await repeat_forever(runtime().breakers.flush_successes, BREAKER_FLUSH_INTERVAL_S,
                         "could not write breaker success counts; a few are lost, which only dilutes failure rates",
                         log)
