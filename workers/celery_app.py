"""The Celery app: per-partner queues and the settings that keep work from being lost.

Built on demand, never at import: `make_celery(settings)` builds one (the API builds its own from its settings),
`get_app()` is the process's, built once from the environment's settings. The tasks are declared with
`celery.shared_task` in the modules `include` names (workers.tasks, workers.webhooks), which the worker imports at
start; they attach to whichever app runs them. `celery -A workers.celery_app` (and `-A workers.celery_app:app`)
find the process's app through this module's `app` attribute, which is `get_app()`.
"""

from __future__ import annotations

import functools
import logging

from celery import Celery

from gateway_core.fleet.redis_clients import is_sentinel_url, kombu_transport_options, redis_url
from gateway_core.settings import Settings, get_settings
from workers.consumer_steps import BatchedBrokerWrites

RUN_JOB_TASK = "fedgate.run_job"


def broker_url(settings: Settings) -> str:
    return redis_url(settings)


def make_celery(settings: Settings) -> Celery:
    url = broker_url(settings)
    app = Celery("fedgate", broker=url, include=["workers.tasks", "workers.webhooks"])
    transport = {
        # One visibility timeout everywhere, above the longest partner call: an unacked job is redelivered
        # only after its worker is surely gone.
        "visibility_timeout": settings.visibility_timeout_s,
        # kombu sweeps for expired unacked messages every interval x throttle seconds (100 s by default);
        # sweep often enough that a dead worker's jobs come back soon after the visibility timeout.
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 5)),
        "unacked_restore_throttle": 1,
        "socket_keepalive": True,
        "health_check_interval": 30,
        **kombu_transport_options(settings),  # sentinel:// URLs: master_name and the sentinels' password
    }
    app.conf.update(
        broker_transport="workers.broker:SentinelTransport" if is_sentinel_url(url) else "workers.broker:Transport",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_pool="workers.aiopool:AsyncioPool",
        worker_consumer="workers.consumer_steps:Consumer",
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        task_ignore_result=True,
        result_backend=None,
        worker_send_task_events=True,
        task_default_queue="partner.default",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_disable_rate_limits=True,
        task_track_started=True,
        # After a broker connection loss the unacked messages are redelivered anyway; a run that lost its
        # claim cannot publish, so the duplicates are harmless. Say so explicitly (Celery 6's default).
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    app.steps["consumer"].add(BatchedBrokerWrites)
    # Partner URLs at INFO on every call are noise; errors still surface through job histories.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return app


@functools.cache
def get_app() -> Celery:
    """The process's Celery app (a worker's, or a producer's without an app of its own), built on first use."""
    return make_celery(get_settings())


def __getattr__(name: str) -> Celery:
    """`app`: the process's app, for `celery -A workers.celery_app`; built on first access, not at import."""
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
