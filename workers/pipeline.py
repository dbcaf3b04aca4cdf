"""One job through the fleet: claim, load, call the partner, then publish or route the failure."""

from __future__ import annotations

import time

from gateway_core.adapters.base import CallRequest, Outcome, PartnerResponse
from gateway_core.models import Attempt, JobStatus, now
from gateway_core.routing import decide
from gateway_core.store import JobRecord
from workers.runtime import Runtime, runtime


async def run_job(job_id: str, partner: str, attempt: int) -> str:
    """Returns a one-word result for the Celery log and Flower (never content)."""
    rt = runtime()
    claim, token, raw = await rt.store.begin_run(job_id, partner, attempt)
    if claim not in ("ok", "redelivered"):
        return claim  # missing, already done, or a stale duplicate: nothing to do
    try:
        record = rt.store.decode(job_id, raw, with_payload=True)
    except (ValueError, KeyError, TypeError) as exc:
        return await _dead_letter_unreadable(rt, job_id, token, partner, attempt, raw, exc)
    if claim == "redelivered":
        record.history.append(
            Attempt(partner=partner, attempt=attempt, outcome="redelivered", started_at=now(), duration_ms=0.0,
                    error="previous worker stopped before finishing; call repeated")
        )
    response = await _call_partner(rt, record, partner, attempt)
    if response.outcome is Outcome.OK and response.text is not None:
        published = await rt.store.publish_success(record, token, response.text, response.usage, partner)
        return "succeeded" if published else "superseded"
    return await _route_failure(rt, record, token, partner, attempt, response)


async def _call_partner(rt: Runtime, record: JobRecord, partner: str, attempt: int) -> PartnerResponse:
    adapter = rt.adapters[partner]
    request = CallRequest(
        messages=record.messages,
        max_tokens=record.params.get("max_tokens"),
        temperature=record.params.get("temperature"),
    )
    started_wall, started = now(), time.perf_counter()
    response = await adapter.call(request)
    record.history.append(
        Attempt(
            partner=partner,
            attempt=attempt,
            outcome=response.outcome.value,
            status_code=response.status_code,
            error=response.error,
            started_at=started_wall,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    )
    return response


async def _route_failure(
    rt: Runtime, record: JobRecord, token: str, partner: str, attempt: int, response: PartnerResponse
) -> str:
    decision = decide(rt.config, record.requested_partner, partner, record.history, response)
    if decision.action == "dead_letter":
        await rt.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, decision.reason)
        return "dead_lettered"
    status = JobStatus.RETRYING if decision.action == "retry" else JobStatus.QUEUED
    await rt.store.move_on(
        record, token, status=status, partner=decision.partner, attempt=attempt + 1, delay_s=decision.delay_s
    )
    return decision.action


async def _dead_letter_unreadable(
    rt: Runtime, job_id: str, token: str, partner: str, attempt: int, raw: dict[str, str], exc: Exception
) -> str:
    """A poison job (a stored record that cannot be read) leaves the queue at once, with the reason kept."""
    reason = str(exc) if isinstance(exc, ValueError) else f"malformed record ({exc.__class__.__name__})"
    record = JobRecord(
        id=job_id, tenant=raw.get("tenant", "?"), partner=partner, requested_partner=partner,
        status=JobStatus.RUNNING, attempt=attempt, created_at=float(raw.get("created_at", now())),
    )
    record.history.append(
        Attempt(partner=partner, attempt=attempt, outcome="fatal", error=f"unreadable job: {reason}",
                started_at=now(), duration_ms=0.0)
    )
    await rt.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, f"unreadable job: {reason}")
    return "dead_lettered"
