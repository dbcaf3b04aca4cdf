"""The baseline: bare Celery with a no-op task, the same broker settings fedgate uses, a Redis result backend."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench_noop", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench.noop",
    result_extended=False,
)


@app.task(name="bench.noop")
def noop() -> None:
    return None
