"""The worker's consumer, changed in how often it talks to Redis and wakes threads, not in what it says.

Celery's event loop (the consumer thread) and the fedgate pool's I/O loop share one GIL. Per job, stock Celery
publishes three task events (one PUBLISH each) and hands the ack back to the consumer thread with a socket wake-up.
Here task events go out as one `task.multi` message per interval, and acks queue up for the consumer loop's next
timer tick; workers.broker then removes the acked messages from Redis together.

Under the fedgate pool the prefetch count is the pool's `messages_held` (its call slots plus the jobs getting ready
for them), also after a broker reconnection: stock Celery computes its maximum as processes times multiplier, which
for a one-process pool would leave a reconnected worker taking one message at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.events import Events
from vine.funtools import ppartial  # type: ignore[import-untyped]

from workers.aiopool import AsyncioPool

log = logging.getLogger("fedgate.consumer")

# Flower and other monitors see task events at most this late.
EVENT_FLUSH_INTERVAL_S = 0.1
# A backlog this large is published at once by whichever thread adds to it.
EVENT_BUFFER_LIMIT = 2000
ACK_INTERVAL_S = 0.01


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._deferred_acks: list[Any] = []
        self._deferred_acks_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        if isinstance(self.pool, AsyncioPool):
            self.initial_prefetch_count = self.max_prefetch_count

    @property
    def max_prefetch_count(self) -> int:
        if isinstance(self.pool, AsyncioPool):
            return self.pool.messages_held
        return int(super().max_prefetch_count)

    def call_soon_ack(self, p: Any, *args: Any, **kwargs: Any) -> Any:
        """Queue the ack (or reject) for the next tick instead of waking the consumer thread for each one."""
        if not self.hub:
            return super().call_soon_ack(p, *args, **kwargs)
        p = ppartial(p, *args, **kwargs)
        with self._deferred_acks_lock:
            self._deferred_acks.append(p)
        return p

    def run_deferred_acks(self) -> None:
        with self._deferred_acks_lock:
            acks, self._deferred_acks = self._deferred_acks, []
        for ack in acks:
            try:
                ack()
            except Exception:  # one failed ack must not stop the others; the message is redelivered later
                log.exception("ack failed")


class BatchedBrokerWrites(bootsteps.StartStopStep):
    """Timers on the consumer loop for task events (one `task.multi` per interval) and deferred acks."""

    requires = (Events,)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timers: list[Any] = []

    def start(self, parent: Any) -> None:
        if parent.hub is None:
            return
        dispatcher = parent.event_dispatcher
        if dispatcher is not None and dispatcher.enabled:
            dispatcher.on_send_buffered = None
            dispatcher.buffer_limit = EVENT_BUFFER_LIMIT
        if not self._timers:
            self._timers.append(parent.hub.call_repeatedly(EVENT_FLUSH_INTERVAL_S, parent._flush_events))
            if isinstance(parent, Consumer):
                self._timers.append(parent.hub.call_repeatedly(ACK_INTERVAL_S, parent.run_deferred_acks))

    def stop(self, parent: Any) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if isinstance(parent, Consumer):
            parent.run_deferred_acks()
        if parent.event_dispatcher is not None:
            parent._flush_events()

    shutdown = stop
