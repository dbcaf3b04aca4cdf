"""Celery pool that runs task traces as greenlets on one asyncio loop (see workers.bridge)."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import threading
import time
from typing import Any

from celery.concurrency.base import BasePool, apply_target

from workers import bridge, call_slots

SWITCH_INTERVAL_S = 0.0005
# Messages held beyond the call slots, as a fraction of them: jobs claimed and redacted, ready to call the moment a
# slot frees. At 2 s latency and ~450 jobs/s a job spends ~0.3 s outside its call, so ~150 of 1,000 are there.
CLAIM_AHEAD_FRACTION = 0.25


class AsyncioPool(BasePool):
    """Holds `concurrency` partner calls in flight on one loop (workers.call_slots); the consumer's prefetch limit
    (`messages_held`) bounds the tasks around them."""

    signal_safe = False
    body_can_be_buffer = True
    stop_grace_s = 30.0

    def on_start(self) -> None:
        # Two busy threads share the GIL (Celery's consumer and the I/O loop). A shorter switch interval bounds how
        # long one can hold the other off; measured here its effect on throughput and p50 is within noise.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # The process's one I/O loop: worker start-up hooks may already have used it to build the runtime.
        self._loop = bridge.io_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._arrivals: list[tuple[Any, ...]] = []
        self._arrivals_lock = threading.Lock()
        call_slots.configure(self.limit)

    @property
    def messages_held(self) -> int:
        """The prefetch count this pool wants: its call slots plus the jobs getting ready for them."""
        return self.limit + math.ceil(self.limit * CLAIM_AHEAD_FRACTION)

    def on_apply(
        self,
        target: Any,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Any = None,
        accept_callback: Any = None,
        **_: Any,
    ) -> None:
        # Messages arrive from the consumer thread in bursts (one broker fetch takes several); waking the loop
        # once per burst instead of once per message saves a syscall and a thread switch per job.
        with self._arrivals_lock:
            self._arrivals.append((target, args or (), kwargs or {}, callback, accept_callback))
            first = len(self._arrivals) == 1
        if first:
            self._loop.call_soon_threadsafe(self._start_arrivals)

    def _start_arrivals(self) -> None:
        with self._arrivals_lock:
            arrivals, self._arrivals = self._arrivals, []
        pid = os.getpid()
        for target, args, kwargs, callback, accept_callback in arrivals:
            task = self._loop.create_task(
                bridge.drive(apply_target, target, args, kwargs, callback, accept_callback, pid)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def on_stop(self) -> None:
        """Warm shutdown: let in-flight calls finish (unfinished ones stay unacked and are redelivered); jobs still
        waiting for a call slot go back to their queue at once."""
        self._loop.call_soon_threadsafe(call_slots.close)
        deadline = time.monotonic() + self.stop_grace_s
        while self._tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        self._halt_loop()

    def on_terminate(self) -> None:
        self._halt_loop()

    def _halt_loop(self) -> None:
        bridge.stop_io_loop()

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        info.update({"max-concurrency": self.limit, "in-flight": len(self._tasks),
                     "calls-in-flight": call_slots.in_use(), "processes": [os.getpid()]})
        return info
