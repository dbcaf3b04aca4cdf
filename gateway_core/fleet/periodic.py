"""Background work a process repeats on its event loop (flushing counters to Redis)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def repeat_forever(work: Callable[[], Awaitable[object]], interval_s: float, failure: str,
                         log: logging.Logger) -> None:
    """Await `work()` every `interval_s`; a failure is logged as `failure` with the error's class (never its text,
    which may quote data) and the next round tries again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await work()
        except Exception as exc:
            log.warning("%s (%s)", failure, exc.__class__.__name__)
