"""The bound on partner calls one worker process has in flight: its `--concurrency`.

Under the fedgate pool a slot is held only for the partner call itself. The worker takes a few more messages
than it has slots (workers.aiopool.AsyncioPool.messages_held), so a job's claim, redaction and settling run while
other jobs' calls hold the slots, and when a call ends a claimed job is already waiting to start the next one.
Before this, each job held its slot from the Celery message to the ack; at 2 s partner latency ~15 % of every
slot's time went on Redis round trips queued behind a busy I/O loop rather than on calls.

A freed slot goes to a waiting interactive-lane job before any batch-lane job. Without a bound configured (other
Celery pools, which bound concurrency themselves) a slot is always free.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from gateway_core.fleet import keys, metrics


class WorkerStopping(Exception):
    """The worker is shutting down: a job still waiting for a slot goes back to its queue instead of calling."""


class CallSlots:
    """A semaphore whose waiters are served by lane: interactive first, then batch, FIFO within each.

    Used only from the worker's I/O loop (no locking needed)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a worker needs at least one call slot")
        self.limit = limit
        self.free = limit
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {lane: deque() for lane in keys.LANES}
        self.closed = False

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiters.values())

    async def acquire(self, lane: str) -> None:
        if self.closed:
            raise WorkerStopping()
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.get(lane, self._waiters[keys.BATCH])
        queue.append(waiter)
        waiting = metrics.JOBS_WAITING_FOR_CALL_SLOT.labels(lane if lane in keys.LANES else keys.BATCH)
        waiting.inc()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # the slot was handed over just as we were cancelled: pass it on
            elif waiter in queue:
                queue.remove(waiter)
            raise
        finally:
            waiting.dec()

    def close(self) -> None:
        """No new calls: every waiter, and anyone who asks later, gets WorkerStopping. Calls in flight finish."""
        self.closed = True
        for queue in self._waiters.values():
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_exception(WorkerStopping())

    def release(self) -> None:
        """Hand the slot straight to the next waiter (no barging by a newcomer), else mark it free."""
        for lane in keys.LANES:
            queue = self._waiters[lane]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self.free += 1

    def slot(self, lane: str) -> _Slot:
        return _Slot(self, lane)


class _Slot:
    __slots__ = ("_lane", "_slots")

    def __init__(self, slots: CallSlots, lane: str) -> None:
        self._slots, self._lane = slots, lane

    async def __aenter__(self) -> None:
        await self._slots.acquire(self._lane)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._slots.release()


class _Unbounded:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None


_UNBOUNDED = _Unbounded()
_slots: CallSlots | None = None


def configure(limit: int | None) -> None:
    """Called by the fedgate pool when it starts (None removes the bound)."""
    global _slots
    _slots = CallSlots(limit) if limit else None
    metrics.WORKER_CALL_SLOTS.set(limit or 0)


def close() -> None:
    """The worker is stopping (called on the I/O loop)."""
    if _slots is not None:
        _slots.close()


def slot(lane: str) -> _Slot | _Unbounded:
    """`async with call_slots.slot(lane): response = await adapter.call(request)`."""
    return _slots.slot(lane) if _slots is not None else _UNBOUNDED


def in_use() -> int:
    return 0 if _slots is None else _slots.limit - _slots.free
