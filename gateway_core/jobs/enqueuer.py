"""The enqueue interface: how the domain puts messages on the fleet's queues without knowing the message format.

The domain never sends a message itself. It asks an `Enqueuer` for the Redis commands that would put the messages
on their queues, and runs them in its own MULTI with the writes they belong with: a job's record and its first
message, a delay-queue entry's removal and its message. Both are written or neither, in one round trip. The workers
implement it with Celery (workers.enqueue.CeleryEnqueuer); the broker and the job store are the same Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from gateway_core.fleet import keys

RedisCommand = tuple[Any, ...]
"""One Redis command as a pipeline method name and its arguments: `("lpush", "partner.x", "<message>")`."""

JobAttempt = tuple[str, str, int]
"""(job id, partner, attempt number): everything a job's message carries."""

WebhookAttempt = tuple[str, int]
"""(delivery id, attempt number): everything a webhook delivery's message carries."""


class Enqueuer(Protocol):
    """Builds queue messages as Redis commands, nothing sent. Raises if the broker cannot be reached to build them
    (nothing is written then)."""

    def job_messages(self, attempts: Iterable[JobAttempt], lane: str = keys.INTERACTIVE) -> list[RedisCommand]:
        """The commands putting each job attempt on its partner's queue of `lane`."""
        ...

    def webhook_messages(self, attempts: Iterable[WebhookAttempt]) -> list[RedisCommand]:
        """The commands putting each webhook delivery attempt on the webhook queue."""
        ...


def stage(pipe: Any, commands: Iterable[RedisCommand]) -> None:
    """Queue commands (from an Enqueuer) on a Redis pipeline, to run with the caller's own writes."""
    for command, *args in commands:
        getattr(pipe, command)(*args)
