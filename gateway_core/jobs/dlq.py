"""The dead-letter queue, for operators: list, inspect, replay and purge dead letters.

`keys.DEAD_LETTERS` is a sorted set of job ids scored by dead-letter time (Redis TIME, ms); the job record
itself stays in its hash until it expires. Nothing here reads or returns prompt or output text: summaries and
details carry ids, partners, statuses, errors and the attempt history only.

A replay keeps the job id and re-enqueues it exactly the way a retry is scheduled (job_settle_move_on.lua):
one Lua script (gateway_core/fleet/lua/dlq_replay.lua) checks the job is still dead-lettered, resets it to `queued` for
the next attempt number, takes it out of the dead-letter set and puts it on the delay queue due now, so every
worker's mover sends it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from gateway_core.config import GatewayConfig
from gateway_core.errors import FedgateError
from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.jobs.models import NOT_CALLS, Attempt, JobStatus
from gateway_core.jobs.store import BATCH_KEY_PREFIX, JobStore, delayed_member
from gateway_core.tenants import spending

MAX_PAGE = 500
_SCAN_CHUNK = 200
_PURGE_BATCH = 200
_SUMMARY_FIELDS = ("tenant", "partner", "requested_partner", "status", "attempt", "error", "history")

# --- errors -----------------------------------------------------------------------------------------------------


class DeadLetterError(FedgateError):
    """A dead-letter operation was refused; the message says why and what to do."""

    code = "dead_letter_error"


class DeadLetterNotFound(DeadLetterError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"no job {job_id!r}: it never existed, was purged, or its record expired (FEDGATE_JOB_TTL_S); "
            "list dead letters with GET /v1/admin/dead-letters or `fedgate dlq list`"
        )
        self.job_id = job_id


class NotDeadLettered(DeadLetterError):
    code = "not_dead_lettered"

    def __init__(self, job_id: str, status: str, action: str) -> None:
        state = {
            JobStatus.SUCCEEDED.value: "it already succeeded",
            JobStatus.QUEUED.value: "it is waiting for a worker (perhaps it was already replayed)",
            JobStatus.RUNNING.value: "a worker is running it now",
            JobStatus.WAITING.value: "it is waiting for partner budget",
            JobStatus.RETRYING.value: "it is waiting to be retried",
            JobStatus.CANCELLED.value: "it was cancelled",
        }.get(status, "it is not in the dead-letter queue")
        what = {"replay": "replayed", "purge": "purged"}.get(action, "shown here")
        super().__init__(
            f"job {job_id!r} is not dead-lettered (status: {status}): {state}; only dead letters can be {what} "
            "(see `fedgate dlq list`)"
        )
        self.job_id = job_id
        self.status = status


class UnknownPartner(DeadLetterError):
    code = "unknown_partner"

    def __init__(self, partner: str, known: list[str]) -> None:
        super().__init__(f"unknown partner {partner!r}: replay to one of {', '.join(known)}")
        self.partner = partner


class PartnerNotAllowed(DeadLetterError):
    code = "partner_not_allowed"

    def __init__(self, tenant: str, partner: str, allowed: list[str]) -> None:
        choices = ", ".join(allowed) or "(none)"
        super().__init__(
            f"tenant {tenant!r} may not use partner {partner!r}: replay to one of its partners ({choices})"
        )
        self.partner = partner


class PayloadRemoved(DeadLetterError):
    code = "payload_removed"

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job {job_id!r} cannot be replayed: its partner's retention policy (policy.retention_s) deleted its "
            "prompt; submit the request again, or purge the dead letter"
        )
        self.job_id = job_id


# --- models -----------------------------------------------------------------------------------------------------


class DeadLetterSummary(BaseModel):
    """One dead letter in a listing: routing facts only, never prompt or output text."""

    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    requested_partner: str
    last_partner: str
    dead_lettered_at: float = Field(description="Unix time, seconds")
    attempts: int = Field(description="Partner calls made (redeliveries not counted)")
    last_status_code: int | None = None
    error: str | None = None


class DeadLetterPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[DeadLetterSummary]
    offset: int
    limit: int
    next_offset: int | None = Field(default=None, description="Pass as offset for the next page; null at the end")
    total: int = Field(description="Entries in the dead-letter queue, before filters")


class DeadLetterDetail(BaseModel):
    """One dead letter with its full attempt history; no prompt, no output."""

    model_config = ConfigDict(extra="forbid")

    id: str
    tenant: str
    status: JobStatus
    requested_partner: str
    last_partner: str
    attempt: int = Field(description="The attempt number of the last delivery")
    attempts: int = Field(description="Partner calls made (redeliveries not counted)")
    error: str | None = None
    dead_lettered_at: float | None = None
    history: list[Attempt] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class ReplayResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    status: JobStatus
    partner: str
    attempt: int


class PurgeResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purged: int


# --- the queue ----------------------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    job_id: str
    score: float
    fields: dict[str, str | None]


class DeadLetters:
    """Operator operations over the dead-letter set and the job records it names."""

    def __init__(self, client: aioredis.Redis, store: JobStore, config: GatewayConfig) -> None:
        self.redis = client
        self.store = store
        self.config = config
        self._replay = client.register_script(script("dlq_replay"))
        self._purge_one = client.register_script(script("dlq_purge_one"))
        self._purge_batch = client.register_script(script("dlq_purge_batch"))

    async def count(self) -> int:
        """Entries in the dead-letter set (records that expired are dropped as listings meet them)."""
        return int(await self.redis.zcard(keys.DEAD_LETTERS))

    async def list(
        self, limit: int = 50, offset: int = 0, partner: str | None = None, tenant: str | None = None
    ) -> DeadLetterPage:
        """Newest first. `partner` matches the requested or the last partner; `offset` counts matching entries."""
        if limit < 1 or limit > MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        if offset < 0:
            raise ValueError("offset must be 0 or more")
        items: list[DeadLetterSummary] = []
        dangling: list[str] = []
        matched = 0
        more = False
        start = 0
        while not more:
            chunk = cast(_Chunk, await self.redis.zrevrange(
                keys.DEAD_LETTERS, start, start + _SCAN_CHUNK - 1, withscores=True
            ))
            if not chunk:
                break
            start += len(chunk)
            for candidate in await _load(self.redis, chunk):
                if candidate.fields.get("status") is None:
                    dangling.append(candidate.job_id)
                    continue
                summary = _summary(candidate)
                if summary is None or not _matches(summary, partner, tenant):
                    continue
                matched += 1
                if matched <= offset:
                    continue
                if len(items) == limit:
                    more = True
                    break
                items.append(summary)
        if dangling:  # the record expired; its set entry is of no use to anyone
            await self.redis.zrem(keys.DEAD_LETTERS, *dangling)
        total = await self.count()
        return DeadLetterPage(items=items, offset=offset, limit=limit,
                              next_offset=offset + len(items) if more else None, total=total)

    async def show(self, job_id: str) -> DeadLetterDetail:
        raw = cast(dict[str, str], await self.redis.hgetall(keys.job(job_id)))
        score = await self.redis.zscore(keys.DEAD_LETTERS, job_id)
        if not raw or "status" not in raw:
            if score is not None:
                await self.redis.zrem(keys.DEAD_LETTERS, job_id)
            raise DeadLetterNotFound(job_id)
        if raw["status"] != JobStatus.DEAD_LETTERED.value:
            raise NotDeadLettered(job_id, raw["status"], "show")
        # Never touch the payload: drop the encrypted fields before decoding.
        light = {k: v for k, v in raw.items() if k not in ("messages", "output")}
        record = self.store.decode(job_id, light, with_payload=False)
        return DeadLetterDetail(
            id=record.id,
            tenant=record.tenant,
            status=record.status,
            requested_partner=record.requested_partner,
            last_partner=record.history[-1].partner if record.history else record.partner,
            attempt=record.attempt,
            attempts=_calls(record.history),
            error=record.error,
            dead_lettered_at=score / 1000 if score is not None else None,
            history=record.history,
            metadata=record.metadata,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )

    async def replay(self, job_id: str, partner: str | None = None) -> ReplayResult:
        """Re-enqueue a dead letter under the same id, to `partner` or the partner it was submitted for."""
        if partner is not None and partner not in self.config.partners:
            raise UnknownPartner(partner, sorted(self.config.partners))
        for _ in range(5):  # a concurrent change to the attempt number is retried against the new value
            fields = cast(
                list[str | None],
                await self.redis.hmget(keys.job(job_id), ["status", "attempt", "requested_partner", "tenant", "lane"]),
            )
            status, attempt_raw, requested, tenant_name, lane = fields
            if status is None:
                raise DeadLetterNotFound(job_id)
            if status != JobStatus.DEAD_LETTERED.value:
                raise NotDeadLettered(job_id, status, "replay")
            target = partner or requested or ""
            if target not in self.config.partners:
                raise UnknownPartner(target, sorted(self.config.partners))
            tenant = self.config.tenants.get(tenant_name or "")
            if tenant is not None and tenant.partners is not None and target not in tenant.partners:
                raise PartnerNotAllowed(tenant.name or tenant_name or "", target, list(tenant.partners))
            if tenant is not None:  # a replay is a new call charged to the tenant: over a cap, a RequestError (402)
                await spending.check_budget(self.redis, tenant)
            current = int(attempt_raw or 0)
            word, value = await self._replay(
                keys=[keys.job(job_id), keys.DEAD_LETTERS, keys.delayed(lane or keys.INTERACTIVE),
                      keys.delayed_wake(lane or keys.INTERACTIVE), keys.UNFINISHED],
                args=[job_id, target, str(current), str(current + 1), delayed_member(job_id, target, current + 1),
                      str(self.store.ttl_s), BATCH_KEY_PREFIX],
            )
            if word == "ok":
                return ReplayResult(id=job_id, status=JobStatus.QUEUED, partner=target, attempt=int(value))
            if word == "missing":
                raise DeadLetterNotFound(job_id)
            if word == "status":
                raise NotDeadLettered(job_id, str(value), "replay")
            if word == "payload_removed":
                raise PayloadRemoved(job_id)
        raise DeadLetterError(f"job {job_id!r} kept changing while it was being replayed; try again")

    async def purge(self, job_id: str) -> PurgeResult:
        """Delete one dead letter: its record and its entry in the dead-letter set."""
        word, value = await self._purge_one(keys=[keys.job(job_id), keys.DEAD_LETTERS], args=[job_id])
        if word == "missing":
            raise DeadLetterNotFound(job_id)
        if word == "status":
            raise NotDeadLettered(job_id, str(value), "purge")
        return PurgeResult(purged=1)

    async def purge_all(self, older_than_s: float | None = None) -> int:
        """Delete every dead letter (or those dead-lettered more than `older_than_s` ago); returns how many."""
        if older_than_s is not None and older_than_s < 0:
            raise ValueError("older_than_s must be 0 or more")
        cutoff: str | float = "+inf"
        if older_than_s is not None:
            seconds, micros = await self.redis.time()
            cutoff = int(seconds) * 1000 + int(micros) // 1000 - int(older_than_s * 1000)
        purged = 0
        while True:
            ids = cast(
                list[str], await self.redis.zrangebyscore(keys.DEAD_LETTERS, "-inf", cutoff, 0, _PURGE_BATCH)
            )
            if not ids:
                return purged
            purged += int(
                await self._purge_batch(
                    keys=[keys.DEAD_LETTERS, *(keys.job(j) for j in ids)],
                    args=["" if cutoff == "+inf" else str(cutoff), *ids],
                )
            )


_Chunk = list[tuple[str, float]]


async def _load(client: aioredis.Redis, chunk: _Chunk) -> list[_Candidate]:
    """The summary fields of each job in a chunk of (job id, score), in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        for job_id, _ in chunk:
            pipe.hmget(keys.job(job_id), list(_SUMMARY_FIELDS))
        rows = cast(list[list[str | None]], await pipe.execute())
    return [
        _Candidate(job_id, float(score), dict(zip(_SUMMARY_FIELDS, row, strict=True)))
        for (job_id, score), row in zip(chunk, rows, strict=True)
    ]


def _history(raw: str | None) -> list[Attempt]:
    if not raw:
        return []
    try:
        return [Attempt.model_validate(a) for a in json.loads(raw)]
    except (ValueError, TypeError):
        return []


def _calls(history: list[Attempt]) -> int:
    return len([a for a in history if a.outcome not in NOT_CALLS])


def _summary(candidate: _Candidate) -> DeadLetterSummary | None:
    f: dict[str, Any] = candidate.fields
    if f.get("status") != JobStatus.DEAD_LETTERED.value:
        return None  # replayed or otherwise moved on since it was listed
    history = _history(f.get("history"))
    last = history[-1] if history else None
    calls = [a for a in history if a.status_code is not None]
    return DeadLetterSummary(
        id=candidate.job_id,
        tenant=f.get("tenant") or "?",
        requested_partner=f.get("requested_partner") or f.get("partner") or "?",
        last_partner=last.partner if last else f.get("partner") or "?",
        dead_lettered_at=candidate.score / 1000,
        attempts=_calls(history),
        last_status_code=calls[-1].status_code if calls else None,
        error=f.get("error"),
    )


def _matches(summary: DeadLetterSummary, partner: str | None, tenant: str | None) -> bool:
    if partner is not None and partner not in (summary.requested_partner, summary.last_partner):
        return False
    return tenant is None or summary.tenant == tenant
