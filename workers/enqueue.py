"""Putting a job attempt on its partner's Celery queue."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import Celery

from gateway_core.fleet import keys
from workers.broker import Channel as CapturingChannel
from workers.broker import captured_publishes
from workers.celery_app import RUN_JOB_TASK

_SEND_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 1}


def celery_task_id(job_id: str, attempt: int) -> str:
    """Deterministic, so a re-send of the same attempt is recognisable as the same delivery."""
    return f"{job_id}-{attempt}"


def send_attempt(app: Celery, job_id: str, partner: str, attempt: int, lane: str = keys.INTERACTIVE,
                 producer: Any = None) -> None:
    app.send_task(
        RUN_JOB_TASK,
        kwargs={"job_id": job_id, "partner": partner, "attempt": attempt},
        queue=keys.partner_queue(partner, lane),
        producer=producer,
        task_id=celery_task_id(job_id, attempt),
        # What Flower and the logs show; precomputed, which also spares Celery's saferepr on every send.
        argsrepr="()",
        kwargsrepr=f"{{'job_id': '{job_id}', 'partner': '{partner}', 'attempt': {attempt}}}",
        retry=True,
        retry_policy=_SEND_RETRY,
    )


def attempt_commands(app: Celery, attempts: Iterable[tuple[str, str, int]],
                     lane: str = keys.INTERACTIVE) -> list[tuple[Any, ...]]:
    """The Redis commands that would put these (job id, partner, attempt)s on their queues: Celery's own messages,
    nothing sent, for the caller to run in the same transaction as the writes they belong with."""
    with captured_publishes() as commands, app.producer_or_acquire() as producer:
        if not isinstance(producer.channel, CapturingChannel):  # another transport would send for real
            raise RuntimeError(f"the broker transport {type(producer.channel).__module__} cannot record publishes; "
                               "fedgate's Celery app uses workers.broker:Transport")
        with producer.batch(1_000_000):
            for job_id, partner, attempt in attempts:
                send_attempt(app, job_id, partner, attempt, lane, producer=producer)
    return list(commands)


def stage(pipe: Any, commands: Iterable[tuple[Any, ...]]) -> None:
    """Queue recorded commands (attempt_commands) on a Redis pipeline."""
    for command, *args in commands:
        getattr(pipe, command)(*args)
