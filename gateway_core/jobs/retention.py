"""Retention: a job's payload (prompt, output, placeholder map) is deleted once its partner's retention has run out.

Finished jobs whose partner keeps payloads for a limited time are in the sorted set `keys.RETENTION` (score: when
the payload goes, ms). Workers reading the interactive lane sweep it about once a second.
"""

from __future__ import annotations

import asyncio
import logging

import redis

from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.jobs.store import JobStore

log = logging.getLogger("fedgate.retention")

BATCH = 500
SWEEP_INTERVAL_S = 1.0


async def drop_expired_payloads(store: JobStore, limit: int = BATCH) -> int:
    """Delete the payload of up to `limit` jobs whose retention period has passed; returns how many."""
    claim = store.redis.register_script(script("retention_claim_due"))
    due = await claim(keys=[keys.RETENTION], args=[limit])
    for job_id in due:
        await store.drop_payload(job_id)
    return len(due)


async def sweep_forever(store: JobStore) -> None:
    while True:
        try:
            await drop_expired_payloads(store)
            await asyncio.sleep(SWEEP_INTERVAL_S)
        except asyncio.CancelledError:
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("retention sweep: store unreachable (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(1)
        except Exception:  # the ids taken this round lose their payload at their record's expiry instead
            log.exception("retention sweep failed; retrying")
            await asyncio.sleep(1)
