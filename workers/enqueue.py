"""The Celery side of the enqueue interface (gateway_core.jobs.enqueuer.Enqueuer): job attempts and webhook
delivery attempts as Celery's own messages, recorded as Redis commands instead of sent (workers.broker), for the
domain to run in the same transaction as the writes they belong with."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from celery import Celery

from gateway_core.fleet import keys
from gateway_core.jobs.enqueuer import JobAttempt, RedisCommand, WebhookAttempt
from gateway_core.webhooks.keys import DELIVER_TASK, WEBHOOK_QUEUE
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


def send_delivery(app: Celery, delivery_id: str, attempt: int, producer: Any = None) -> None:
    app.send_task(
        DELIVER_TASK,
        kwargs={"delivery_id": delivery_id, "attempt": attempt},
        queue=WEBHOOK_QUEUE,
        producer=producer,
        task_id=f"{delivery_id}-{attempt}",
        argsrepr="()",
        kwargsrepr=f"{{'delivery_id': '{delivery_id}', 'attempt': {attempt}}}",
        retry=True,
        retry_policy=_SEND_RETRY,
    )


def recorded_sends(app: Celery, send: Callable[[Any], None]) -> list[RedisCommand]:
    """The Redis commands the sends `send(producer)` makes, nothing sent."""
    with captured_publishes() as commands, app.producer_or_acquire() as producer:
        if not isinstance(producer.channel, CapturingChannel):  # another transport would send for real
            raise RuntimeError(f"the broker transport {type(producer.channel).__module__} cannot record publishes; "
                               "fedgate's Celery app uses workers.broker:Transport")
        with producer.batch(1_000_000):
            send(producer)
    return list(commands)


def attempt_commands(app: Celery, attempts: Iterable[JobAttempt], lane: str = keys.INTERACTIVE) -> list[RedisCommand]:
    """The Redis commands that would put these (job id, partner, attempt)s on their queues: Celery's own messages,
    nothing sent, for the caller to run in the same transaction as the writes they belong with."""

    def send(producer: Any) -> None:
        for job_id, partner, attempt in attempts:
            send_attempt(app, job_id, partner, attempt, lane, producer=producer)

    return recorded_sends(app, send)


def delivery_commands(app: Celery, attempts: Iterable[WebhookAttempt]) -> list[RedisCommand]:
    """The Redis commands that would put these (delivery id, attempt)s on queue `webhooks`, nothing sent."""

    def send(producer: Any) -> None:
        for delivery_id, attempt in attempts:
            send_delivery(app, delivery_id, attempt, producer=producer)

    return recorded_sends(app, send)


class CeleryEnqueuer:
    """gateway_core.jobs.enqueuer.Enqueuer on a Celery app whose broker is the job store's Redis."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def job_messages(self, attempts: Iterable[JobAttempt], lane: str = keys.INTERACTIVE) -> list[RedisCommand]:
        return attempt_commands(self.app, attempts, lane)

    def webhook_messages(self, attempts: Iterable[WebhookAttempt]) -> list[RedisCommand]:
        return delivery_commands(self.app, attempts)
