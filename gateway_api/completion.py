"""Wake long-polling requests when their job finishes: one Redis subscription per API process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from gateway_core import keys

log = logging.getLogger("fedgate.api.completion")


class CompletionListener:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.sealed_outputs: dict[str, str] = {}  # retention-0 jobs: output only travels in the message
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self.ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def register(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        return event

    def unregister(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]
                self.sealed_outputs.pop(job_id, None)

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.DONE_CHANNEL)
                    self.ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            job_id, _, sealed = message["data"].partition("|")
                            waiters = self._waiters.get(job_id, ())
                            if sealed and waiters:
                                self.sealed_outputs[job_id] = sealed
                            for event in waiters:
                                event.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("completion subscription lost; resubscribing")
                # Wake everyone so they re-read the store rather than miss a completion.
                for events in list(self._waiters.values()):
                    for event in events:
                        event.set()
                await asyncio.sleep(0.5)
