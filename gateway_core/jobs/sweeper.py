"""The sweeper: finds jobs whose message is gone and sends them again, so that every accepted job reaches a final
status.

A job's message is normally always somewhere: in its partner's queue (a Redis list), delivered to a worker and not
yet acknowledged (kombu's `unacked` hash, from which a dead worker's messages come back after the visibility
timeout), or in its lane's delay queue (a retry, a budget wait, a fallback). Faults can still lose one: a worker
killed between the BRPOP that takes a message and the write that records it as delivered, a Redis restart that
drops a BRPOP's answer, a Redis error a task did not survive. Such a job would stay `queued` (or `running`,
`waiting`, `retrying`) forever.

How a sweep stays cheap:
- `keys.UNFINISHED` indexes the jobs that may not have finished: a sorted set written in the same step that creates
  a job (gateway_core.jobs.submission, gateway_core.jobs.batches) and that a dead letter's replay puts the job back
  in. Its score is when the job was last looked at (first: created), and a round looks only at jobs not looked at
  for `grace_s`.
- For those, pipelines read their status, partner, attempt and run token; finished and expired ones leave the
  index there (the steps that end a job do not touch it: nothing is added to a job's hot path, and a job costs the
  sweep one HMGET and one ZREM in its life).
- Their messages are looked for in the order messages travel (delay queue, queue lists, unacked deliveries), so a
  message moving while the sweep reads is met again further on; the lists and the hash are read server side in
  chunks that return task ids only (gateway_core/fleet/lua/sweep_message_ids.lua), and only while some are still
  unaccounted for. Each job found is not looked at again for another `grace_s`.

When it re-sends:
- A job is re-sent only when found missing twice, the second time at least `grace_s` later (`queued`, `waiting`,
  `retrying`: their message is written in the same step as their status) or at least the visibility timeout later
  (`running`: a live run always finishes within it, so its claim is dead by then), and unchanged in between
  (same status, partner, attempt and run token).
- A `running` job whose worker process is gone (its run token names an owner whose heartbeat key expired,
  gateway_core.jobs.run_owners) counts as missing even while its delivery waits in kombu's unacked hash, and is
  re-sent when found so twice `confirm_s` apart: within seconds of a SIGKILL, not after the visibility timeout.
  The delivery, restored later, carries the old attempt and is dropped as stale.
- The re-send is one Lua step (gateway_core/fleet/lua/job_sweep_resend.lua) guarded on everything the sweeper saw:
  the job goes to its lane's delay queue as a new attempt on the same partner, due now, and the delay-queue mover
  sends it through the normal enqueue path. A 'swept' entry in its history says so. Two sweepers (or a sweeper and a
  worker) cannot both act on the same job; a run that still held it loses its claim.
- Every worker runs `sweep_forever`; a lock (`keys.SWEEPER_LOCK`, renewed each round, taken over when its holder
  dies) keeps one of them sweeping at a time.

`fedgate_swept_jobs_total{partner, status}` counts the re-sends (on the worker that made them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from prometheus_client import Counter

from gateway_core.fleet import keys
from gateway_core.fleet.fleet_state import UNACKED, lane_queues
from gateway_core.fleet.lua import script
from gateway_core.fleet.metrics import label
from gateway_core.jobs import run_owners
from gateway_core.jobs.store import delayed_member

log = logging.getLogger("fedgate.sweeper")

SWEPT = Counter(
    "fedgate_swept_jobs",
    "Jobs whose message was lost (no queue entry, no unacknowledged delivery, no delay-queue entry) and that the "
    "sweeper sent again, by partner and the status they were stuck in",
    ["partner", "status"],
)

UNFINISHED_STATUSES = frozenset({"queued", "running", "waiting", "retrying"})
FIELDS = ("status", "partner", "attempt", "run_token", "lane")
CHUNK = 500  # messages read per Lua call (about a millisecond of Redis time), jobs read per pipeline
PAGE = 20_000  # jobs looked at together (their messages looked for in one pass over each place)
REASON = "message lost (no queue entry, no unacknowledged delivery, no delay-queue entry); re-sent by the sweeper"
ABANDONED = "the worker running it stopped (no heartbeat); re-sent by the sweeper"


def message_id(job_id: str, attempt: int) -> str:
    """The task id a job attempt's message carries (workers.enqueue.celery_task_id gives it; a test holds the two to
    the same form)."""
    return f"{job_id}-{attempt}"


def default_timings(visibility_timeout_s: float) -> tuple[float, float]:
    """(grace_s, interval_s) for a fleet with this visibility timeout: a job is looked at once it has been left alone
    a fifth of it (5 to 60 s), and rounds run twice per grace period (1 to 30 s)."""
    grace_s = min(60.0, max(5.0, visibility_timeout_s / 5))
    return grace_s, min(30.0, max(1.0, grace_s / 2))


@dataclass(frozen=True)
class Seen:
    """What the sweeper saw of an unfinished job: a re-send happens only if the job is still exactly this."""

    status: str
    partner: str
    attempt: int
    run_token: str
    lane: str

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def owner(self) -> str | None:
        """The worker process running it, when its run token says (gateway_core.jobs.run_owners)."""
        return run_owners.owner_of(self.run_token) if self.running else None


@dataclass
class Suspicion:
    seen: Seen
    since_ms: int


@dataclass
class SweepResult:
    """One round: jobs looked at, of those finished or gone (left the index), found with their message, found
    without it (the first time, or not yet long enough), and re-sent."""

    looked_at: int = 0
    finished: int = 0
    present: int = 0
    suspected: int = 0
    resent: list[str] = field(default_factory=list)


class Sweeper:
    """Sweeps the fleet's Redis (`client`, decode_responses or not) for jobs whose message is gone.

    `grace_s`: how long a job is left alone before it is looked at (again); `confirm_s`: how long a job not running
    must stay missing before it is re-sent (default: `grace_s`); `running_confirm_s`: the same for a running one
    (default: the visibility timeout)."""

    def __init__(
        self, client: aioredis.Redis, *, visibility_timeout_s: float, grace_s: float | None = None,
        interval_s: float | None = None, confirm_s: float | None = None, running_confirm_s: float | None = None,
        owner: str | None = None,
    ) -> None:
        default_grace, default_interval = default_timings(visibility_timeout_s)
        self.redis = client
        self.grace_s = default_grace if grace_s is None else grace_s
        self.interval_s = default_interval if interval_s is None else interval_s
        self.confirm_s = self.grace_s if confirm_s is None else confirm_s
        self.running_confirm_s = float(visibility_timeout_s) if running_confirm_s is None else running_confirm_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.suspects: dict[str, Suspicion] = {}
        self._read_ids = client.register_script(script("sweep_message_ids"))
        self._resend = client.register_script(script("job_sweep_resend"))
        self._lock = client.register_script(script("sweeper_lock"))

    # --- one round ----------------------------------------------------------------------------------------------

    async def sweep(self) -> SweepResult:
        """One round over the jobs due a look; does not take the lock (`sweep_forever` does)."""
        result = SweepResult()
        now_ms = await self._now_ms()
        # Page after page while jobs are due, for at most one interval (the rest wait for the next round): finished
        # jobs cost a page little, so the index keeps up with far more jobs a second than a fleet finishes.
        give_up_at = time.monotonic() + max(self.interval_s, 1.0)
        while True:
            # Exclusive bound: a job looked at in this round (scored now_ms) is not due again in it.
            due = [_text(j) for j in await self.redis.zrangebyscore(
                keys.UNFINISHED, "-inf", f"({now_ms - int(self.grace_s * 1000)}", start=0, num=PAGE)]
            if due:
                await self._look_at(due, now_ms, result)
            if len(due) < PAGE or time.monotonic() > give_up_at:
                break
        self._forget_old_suspicions(now_ms)
        return result

    async def _look_at(self, due: list[str], now_ms: int, result: SweepResult) -> None:
        result.looked_at += len(due)
        seen = await self._read(due)
        gone = [job_id for job_id in due if seen.get(job_id) is None]
        for start in range(0, len(gone), CHUNK):
            await self.redis.zrem(keys.UNFINISHED, *gone[start:start + CHUNK])
        for job_id in gone:
            self.suspects.pop(job_id, None)
        result.finished += len(gone)
        unfinished = {job_id: found for job_id, found in seen.items() if found is not None}
        present = await self.with_message(unfinished)
        dead = await run_owners.dead_owners(self.redis, [o for f in unfinished.values() if (o := f.owner)])
        abandoned = {job_id for job_id, found in unfinished.items() if found.owner in dead}
        looked_again: list[str] = []
        for job_id, found in unfinished.items():
            if job_id in present and job_id not in abandoned:
                self.suspects.pop(job_id, None)
                looked_again.append(job_id)
                result.present += 1
                continue
            suspicion = self.suspects.get(job_id)
            if suspicion is None or suspicion.seen != found:
                self.suspects[job_id] = Suspicion(found, now_ms)
                looked_again.append(job_id)
                result.suspected += 1
                continue
            confirm_s = self.running_confirm_s if found.running and job_id not in abandoned else self.confirm_s
            if now_ms - suspicion.since_ms < confirm_s * 1000:
                looked_again.append(job_id)
                result.suspected += 1
                continue
            if await self.resend(job_id, found, ABANDONED if job_id in abandoned else REASON):
                result.resent.append(job_id)
            else:
                looked_again.append(job_id)
        for start in range(0, len(looked_again), CHUNK):
            # XX: a job that left the index meanwhile is not put back.
            await self.redis.zadd(keys.UNFINISHED, dict.fromkeys(looked_again[start:start + CHUNK], now_ms), xx=True)

    async def resend(self, job_id: str, seen: Seen, reason: str = REASON) -> bool:
        """Send the job again as a new attempt, if it is still as `seen`; True when this call did it."""
        next_attempt = seen.attempt + 1
        word = _text(await self._resend(
            keys=[keys.job(job_id), keys.delayed(seen.lane), keys.delayed_wake(seen.lane), keys.UNFINISHED],
            args=[job_id, seen.status, seen.partner, str(seen.attempt), seen.run_token, str(next_attempt),
                  delayed_member(job_id, seen.partner, next_attempt), reason],
        ))
        self.suspects.pop(job_id, None)
        if word == "missing":
            await self.redis.zrem(keys.UNFINISHED, job_id)
        if word != "resent":
            return False
        SWEPT.labels(label(seen.partner), label(seen.status)).inc()
        log.warning("job %s (%s on %s, attempt %d): %s; re-sent as attempt %d", job_id, seen.status,
                    label(seen.partner), seen.attempt, "its worker stopped" if reason == ABANDONED else
                    "its message was lost", next_attempt)
        return True

    async def _read(self, job_ids: Sequence[str]) -> dict[str, Seen | None]:
        """Each job as the sweeper sees it; None when it finished or its record is gone."""
        out: dict[str, Seen | None] = {}
        for start in range(0, len(job_ids), CHUNK):
            part = job_ids[start:start + CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in part:
                    pipe.hmget(keys.job(job_id), list(FIELDS))
                rows = await pipe.execute()
            for job_id, row in zip(part, rows, strict=True):
                status, partner, attempt, run_token, lane = (_text(v) if v is not None else None for v in row)
                if status not in UNFINISHED_STATUSES or not partner or not attempt or not attempt.isdigit():
                    out[job_id] = None
                    continue
                out[job_id] = Seen(status, partner, int(attempt), run_token or "", lane or keys.INTERACTIVE)
        return out

    # --- where messages are ---------------------------------------------------------------------------------------

    async def with_message(self, jobs: dict[str, Seen]) -> set[str]:
        """The ids of `jobs` whose current attempt has a message somewhere. Looked for in the order messages travel
        (delay queue -> queue list -> unacked delivery), so one that moves while this reads is met further on."""
        wanted = {message_id(job_id, seen.attempt): job_id for job_id, seen in jobs.items()}
        found: set[str] = set()
        by_lane: dict[str, list[str]] = {}
        for job_id, seen in jobs.items():
            by_lane.setdefault(seen.lane, []).append(job_id)
        for lane, job_ids in by_lane.items():
            members = [delayed_member(job_id, jobs[job_id].partner, jobs[job_id].attempt) for job_id in job_ids]
            for start in range(0, len(members), CHUNK):
                scores = await self.redis.zmscore(keys.delayed(lane), members[start:start + CHUNK])
                found.update(job_id for job_id, score in zip(job_ids[start:start + CHUNK], scores, strict=True)
                             if score is not None)
        lists: dict[str, set[str]] = {}
        for job_id, seen in jobs.items():
            if job_id not in found:
                for queue in lane_queues(seen.partner)[seen.lane]:
                    lists.setdefault(queue, set()).add(message_id(job_id, seen.attempt))
        for queue, ids in lists.items():
            missing = ids - {message_id(job_id, jobs[job_id].attempt) for job_id in found}
            if missing:
                found.update(wanted[task] for task in await self._scan(queue, "list", missing))
        left = {task for task, job_id in wanted.items() if job_id not in found}
        if left:
            found.update(wanted[task] for task in await self._scan(UNACKED, "hash", left))
        return found

    async def _scan(self, source: str, kind: str, wanted: set[str]) -> set[str]:
        """Which of the task ids `wanted` have a message in `source`; reads it only until all are found."""
        found: set[str] = set()
        cursor = "0"
        while True:
            next_cursor, ids = await self._read_ids(keys=[source], args=[kind, cursor, CHUNK])
            found.update(wanted.intersection(_text(ids).split()))
            cursor = _text(next_cursor)
            if cursor == "0" or found == wanted:
                return found

    # --- running it -----------------------------------------------------------------------------------------------

    async def holds_lock(self) -> bool:
        """Take or renew the lock; True while this sweeper is the one sweeping."""
        ttl_ms = int(max(self.interval_s * 3, 10.0) * 1000)
        return bool(await self._lock(keys=[keys.SWEEPER_LOCK], args=[self.owner, ttl_ms]))

    async def sweep_forever(self) -> None:
        """Sweep every `interval_s` while holding the lock; any other process's sweeper waits for it to run out."""
        while True:
            try:
                if await self.holds_lock():
                    result = await self.sweep()
                    if result.resent:
                        log.warning("sweeper: %d job(s) re-sent this round", len(result.resent))
                else:
                    self.suspects.clear()  # another process sweeps; what this one saw goes stale
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("sweeper: store unreachable (%s); retrying", exc.__class__.__name__)
            except Exception as exc:  # never stop sweeping; the class only, as a text may quote data
                log.error("sweeper: round failed (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(self.interval_s)

    async def _now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def _forget_old_suspicions(self, now_ms: int) -> None:
        """Suspicions of jobs this sweeper has not looked at for long (they finished, or another sweeper had them)."""
        horizon = now_ms - int(max(self.running_confirm_s, self.confirm_s, self.grace_s) * 4000)
        for job_id in [j for j, s in self.suspects.items() if s.since_ms < horizon]:
            del self.suspects[job_id]


def index_entries(job_ids: Iterable[str], created_ms: int) -> dict[str, int]:
    """The `keys.UNFINISHED` entries for new jobs (ZADD mapping): looked at first `grace_s` after creation."""
    return dict.fromkeys(job_ids, created_ms)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
