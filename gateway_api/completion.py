"""Wake long-polling requests when their job finishes: one Redis subscription per API process.

It reads the interactive lane's completion channel always, and the batch lane's only while some request waits for
a batch job: a draining 50,000-job batch then costs the API nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from gateway_core.fleet import keys

log = logging.getLogger("fedgate.api.completion")


class CompletionListener:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.sealed_outputs: dict[str, str] = {}  # retention-0 jobs: output only travels in the message
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self._pubsub: aioredis.client.PubSub | None = None
        self._batch_followers = 0

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

    async def follow_batch_lane(self) -> None:
        """Also read batch completions until the matching `unfollow_batch_lane`."""
        self._batch_followers += 1
        if self._batch_followers == 1 and self._pubsub is not None:
            await self._pubsub.subscribe(keys.done_channel(keys.BATCH))

    async def unfollow_batch_lane(self) -> None:
        self._batch_followers -= 1
        if self._batch_followers == 0 and self._pubsub is not None:
            with contextlib.suppress(Exception):  # a lost subscription is dropped anyway
                await self._pubsub.unsubscribe(keys.done_channel(keys.BATCH))

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.DONE_CHANNEL)
                    if self._batch_followers:
                        await pubsub.subscribe(keys.done_channel(keys.BATCH))
                    self._pubsub = pubsub
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
                self._pubsub = None
                log.warning("completion subscription lost; resubscribing")
                # Wake everyone so they re-read the store rather than miss a completion.
                for events in list(self._waiters.values()):
                    for event in events:
                        event.set()
                await asyncio.sleep(0.5)
