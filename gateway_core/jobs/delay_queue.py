"""The delay queue: retries, waits and fallbacks sit in a Redis sorted set, not in worker memory.

Job attempts wait in one sorted set per lane (interactive, batch); webhook retries in their own
(gateway_core.webhooks.queue). One mover serves them all, with one set of guarantees: it claims due entries
atomically (a lease, so a mover that dies mid-send is covered by another once the lease runs out), then pushes
their messages and removes the entries in one transaction, so an entry is never both sent and left behind, and
never lost. What differs per queue is only how an entry becomes a message (an Enqueuer builds it).

Every worker runs a mover for each lane it consumes (batch jobs never cost an interactive-only worker anything,
not even the moving); every webhook worker runs the one for webhook retries (workers.webhooks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import redis
import redis.asyncio as aioredis

from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.jobs.enqueuer import Enqueuer, RedisCommand, stage
from gateway_core.jobs.store import parse_delayed_member

log = logging.getLogger("fedgate.delay_queue")

LEASE_MS = 30_000
BATCH = 500
MAX_IDLE_S = 0.5

Messages = Callable[[Sequence[str]], list[RedisCommand]]
"""Due entries (sorted-set members) -> the Redis commands that put their messages on their queues."""


class DelayQueueMover:
    """Moves the due entries of one delay queue (a sorted set scored by due time in ms, Redis TIME) to their queues.

    `wake_key`: a list producers push to when they schedule something due sooner than the mover would look again
    (the mover blocks on it between rounds); without one the mover sleeps. `max_idle_s`: the longest it waits
    before looking again.
    """

    def __init__(self, client: aioredis.Redis, zset: str, messages: Messages, *, name: str,
                 wake_key: str | None = None, max_idle_s: float = MAX_IDLE_S) -> None:
        self.redis = client
        self.zset = zset
        self.messages = messages
        self.name = name
        self.wake_key = wake_key
        self.max_idle_s = max_idle_s
        self._claim = client.register_script(script("delayed_claim_due"))

    async def move_due(self) -> tuple[int, float]:
        """Send every due entry; returns (how many moved, seconds until the next is due, at most max_idle_s)."""
        due, wait_ms = await self._claim(keys=[self.zset], args=[BATCH, LEASE_MS])
        if due:
            commands = self.messages(due)
            # Sent and removed together: a mover that dies here leaves every entry leased and unsent, never sent twice.
            async with self.redis.pipeline(transaction=True) as pipe:
                stage(pipe, commands)
                pipe.zrem(self.zset, *due)
                await pipe.execute()
        wait_s = self.max_idle_s if int(wait_ms) < 0 else min(self.max_idle_s, int(wait_ms) / 1000)
        return len(due), wait_s

    async def run_forever(self) -> None:
        while True:
            try:
                moved, wait_s = await self.move_due()
                if not moved and wait_s > 0:
                    if self.wake_key is None:
                        await asyncio.sleep(wait_s)
                    else:
                        await self.redis.blpop([self.wake_key], timeout=max(wait_s, 0.01))
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("%s mover: store unreachable (%s); retrying", self.name, exc.__class__.__name__)
                await asyncio.sleep(1)
            except Exception:  # keep moving; claimed entries stay leased and are never lost
                log.exception("%s mover failed; retrying", self.name)
                await asyncio.sleep(1)


def job_mover(client: aioredis.Redis, enqueuer: Enqueuer, lane: str = keys.INTERACTIVE) -> DelayQueueMover:
    """The mover for one lane's job attempts (members `job_id|partner|attempt`) to their partner queues."""

    def messages(due: Sequence[str]) -> list[RedisCommand]:
        return enqueuer.job_messages([parse_delayed_member(member) for member in due], lane)

    return DelayQueueMover(client, keys.delayed(lane), messages, name=f"delay queue ({lane})",
                           wake_key=keys.delayed_wake(lane))
