"""The delay queue: retries, waits and fallbacks sit in a Redis sorted set, not in worker memory.

One sorted set per lane (interactive, batch). Every worker runs a mover for each lane it consumes. A mover claims
due entries atomically (a lease, so a mover that dies mid-send is covered by another), sends them to their
partner's queue of that lane and removes them in one transaction. Batch jobs therefore never cost an
interactive-only worker anything, not even the moving.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis
import redis.asyncio as aioredis
from celery import Celery

from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.jobs.store import JobStore, parse_delayed_member
from workers.enqueue import attempt_commands, stage

log = logging.getLogger("fedgate.delay_queue")

LEASE_MS = 30_000
BATCH = 500
MAX_IDLE_S = 0.5


class DelayQueueMover:
    def __init__(self, client: aioredis.Redis, app: Celery, lane: str = keys.INTERACTIVE) -> None:
        self.redis = client
        self.app = app
        self.lane = lane
        self._claim = client.register_script(script("delayed_claim_due"))
        self._claim_retention = client.register_script(script("retention_claim_due"))

    async def move_due(self) -> tuple[int, float]:
        """Send every due entry; returns (how many moved, seconds until the next is due or MAX_IDLE_S)."""
        zset = keys.delayed(self.lane)
        due, wait_ms = await self._claim(keys=[zset], args=[BATCH, LEASE_MS])
        if due:
            messages = attempt_commands(self.app, [parse_delayed_member(member) for member in due], self.lane)
            # Sent and removed together: a mover that dies here leaves every entry leased and unsent, never sent twice.
            async with self.redis.pipeline(transaction=True) as pipe:
                stage(pipe, messages)
                pipe.zrem(zset, *due)
                await pipe.execute()
        wait_s = MAX_IDLE_S if int(wait_ms) < 0 else min(MAX_IDLE_S, int(wait_ms) / 1000)
        return len(due), wait_s

    async def drop_expired_payloads(self, store: JobStore) -> int:
        """Retention: delete the payload of jobs whose partner's retention period has passed."""
        due = await self._claim_retention(keys=[keys.RETENTION], args=[BATCH])
        for job_id in due:
            await store.drop_payload(job_id)
        return len(due)

    async def run_forever(self, store: JobStore | None = None) -> None:
        next_sweep = 0.0
        while True:
            try:
                if store is not None and self.lane == keys.INTERACTIVE and time.monotonic() >= next_sweep:
                    await self.drop_expired_payloads(store)
                    next_sweep = time.monotonic() + 1.0
                moved, wait_s = await self.move_due()
                if not moved and wait_s > 0:
                    await self.redis.blpop([keys.delayed_wake(self.lane)], timeout=max(wait_s, 0.01))
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("delay queue mover: store unreachable (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(1)
            except Exception:  # keep moving; claimed entries stay leased and are never lost
                log.exception("delay queue mover failed; retrying")
                await asyncio.sleep(1)
