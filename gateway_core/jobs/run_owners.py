"""Which process runs a job, and whether it is still alive: so a job whose worker was SIGKILLed mid-call is sent
again within seconds, not only after kombu's visibility timeout brings its unacknowledged delivery back.

A worker process has an owner id (host, pid and a random part). Its runs' tokens start with it (`run_token`), and
it keeps `keys.run_owner_alive(owner)` alive with a short TTL (`heartbeat_forever`). The sweeper (gateway_core.jobs.
sweeper) reads a running job's owner from its token: when the owner's key is gone at two looks, the job is sent
again as a new attempt, even though its delivery still waits in kombu's unacked hash. That delivery, restored later,
carries the old attempt and is dropped as stale (job_begin_run.lua), so the partner is called again only for a run
whose worker is gone. A worker wrongly thought dead (its heartbeat stalled for longer than the TTL twice) costs a
duplicate call, never a lost job: its run has lost its claim, and its settle is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis

from gateway_core.fleet import keys

HEARTBEAT_S = 1.0
ALIVE_TTL_MS = 5000  # several heartbeats: a busy loop or a short store outage does not make a worker look dead
SEPARATOR = "/"

log = logging.getLogger("fedgate.worker")


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def run_token(owner: str | None) -> str:
    """A new run's token; with an owner, the sweeper can tell whose run it is."""
    token = secrets.token_hex(8)
    return f"{owner}{SEPARATOR}{token}" if owner else token


def owner_of(token: str) -> str | None:
    owner, separator, _ = token.rpartition(SEPARATOR)
    return owner if separator and owner else None


async def beat(client: aioredis.Redis, owner: str) -> None:
    await client.set(keys.run_owner_alive(owner), "1", px=ALIVE_TTL_MS)


async def heartbeat_forever(client: aioredis.Redis, owner: str) -> None:
    """Keep `owner` alive every HEARTBEAT_S, from now until cancelled (then it is gone at once)."""
    try:
        while True:
            try:
                await beat(client, owner)
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("worker heartbeat not written (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(HEARTBEAT_S)
    except asyncio.CancelledError:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await client.delete(keys.run_owner_alive(owner))
        raise


async def dead_owners(client: aioredis.Redis, owners: Iterable[str]) -> set[str]:
    """The owners among `owners` with no heartbeat now."""
    listed = sorted(set(owners))
    if not listed:
        return set()
    async with client.pipeline(transaction=False) as pipe:
        for owner in listed:
            pipe.exists(keys.run_owner_alive(owner))
        alive = await pipe.execute()
    return {owner for owner, found in zip(listed, alive, strict=True) if not found}
