"""Celery tasks. Arguments are ids only: job id, partner, attempt number; never content."""

from __future__ import annotations

import asyncio

from celery.signals import worker_ready

from workers import pipeline
from workers.bridge import await_, io_loop
from workers.celery_app import RUN_JOB_TASK, app
from workers.delay_queue import DelayQueueMover
from workers.runtime import runtime


@app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)
def run_job(job_id: str, partner: str, attempt: int) -> str:
    return await_(pipeline.run_job(job_id, partner, attempt))


@worker_ready.connect
def _start_delay_queue_mover(**_: object) -> None:
    asyncio.run_coroutine_threadsafe(_run_mover(), io_loop())


async def _run_mover() -> None:
    await DelayQueueMover(runtime().redis, app).run_forever()
