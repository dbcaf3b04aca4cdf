"""Run synchronous Celery task code on an asyncio loop without blocking it.

Celery's tracer is synchronous. The fedgate pool runs each task's trace inside a greenlet on the worker's
asyncio loop; when task code calls `await_(coro)`, the greenlet switches back to the loop, which awaits the
coroutine and switches in again with its result (the pattern SQLAlchemy's asyncio bridge uses). So one
worker process holds thousands of partner calls in flight on one loop, while Celery keeps its full task
semantics: late acks, events for Flower, failure handling. Under any other pool, `await_` falls back to
a background loop thread per process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from greenlet import getcurrent, greenlet

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None
_loop_lock = threading.Lock()


class TaskGreenlet(greenlet):  # type: ignore[misc]
    """A greenlet that runs one task trace and may suspend on awaitables."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        return asyncio.new_event_loop()


def io_loop() -> asyncio.AbstractEventLoop:
    """This process's one I/O loop, running in a background thread started on first use."""
    global _loop, _loop_thread
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = new_event_loop()
            _loop_thread = threading.Thread(target=loop.run_forever, name="fedgate-io-loop", daemon=True)
            _loop_thread.start()
            _loop = loop
        return _loop


def stop_io_loop(timeout_s: float = 5.0) -> None:
    with _loop_lock:
        loop, thread = _loop, _loop_thread
    if loop is not None and loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=timeout_s)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for an awaitable from synchronous task code."""
    current = getcurrent()
    if isinstance(current, TaskGreenlet):
        return current.parent.switch(awaitable)  # type: ignore[no-any-return]
    return asyncio.run_coroutine_threadsafe(_await(awaitable), io_loop()).result()


async def drive(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a TaskGreenlet, awaiting whatever it hands back until it finishes."""
    child = TaskGreenlet(fn)
    pending = child.switch(*args)
    while not child.dead:
        try:
            value = await pending
        except BaseException as exc:
            pending = child.throw(exc)
        else:
            pending = child.switch(value)
    return pending
