"""One job through the fleet. Each stage is a small function over a RunContext:

claim → redact for THIS partner's policy → (breaker, budget) → call the partner → check the output contract
(one repair call where configured) → restore placeholders and publish, or route the failure (retry / fallback —
re-redacted from the original for the next partner — / dead letter).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.exceptions

from gateway_core.config import PartnerConfig
from gateway_core.contracts import ContractVersion, parse_lenient, validation_errors
from gateway_core.fleet import metrics
from gateway_core.jobs import response_format
from gateway_core.jobs.models import Attempt, JobStatus, Message, now
from gateway_core.jobs.routing import decide
from gateway_core.jobs.store import EMBEDDING, JobRecord, WebhookWrite, job_retention_s
from gateway_core.partners.adapters.base import CallRequest, Outcome, PartnerResponse
from gateway_core.partners.ratelimit import estimate_tokens
from gateway_core.redaction import PlaceholderMap, RedactionError
from gateway_core.tenants import metering
from workers import call_slots, embedding_run, streaming, telemetry
from workers.message_redaction import redact_message, restore_tool_calls
from workers.notify import send_webhook, webhook_for
from workers.runtime import Runtime, runtime

# A budget wait shorter than this is slept through in place; longer ones free the slot via the delay queue.
INLINE_WAIT_S = 0.05
ADMIT_INLINE_WAIT_S = 0.25
ADMIT_TRIES = 8
# A run that waited longer than this for its call slot checks that it still holds the job before calling: while it
# waited the job may have been cancelled, or redelivered to another worker after the visibility timeout.
CLAIM_RECHECK_AFTER_S = 0.005

log = logging.getLogger("fedgate.worker")


@dataclass
class RunContext:
    rt: Runtime
    record: JobRecord
    token: str
    partner: PartnerConfig
    attempt: int
    outgoing: list[Message] = field(default_factory=list)
    contract: ContractVersion | None = None
    placeholders: PlaceholderMap = field(default_factory=PlaceholderMap)
    redactions: dict[str, int] = field(default_factory=dict)
    relayed: bool = False  # this run relayed the partner's own stream (workers/streaming.py)

    def note(self, outcome: str, error: str | None, status_code: int | None = None, duration_ms: float = 0.0,
             redactions: dict[str, int] | None = None, started_at: float | None = None) -> None:
        self.record.history.append(
            Attempt(partner=self.partner.name, attempt=self.attempt, outcome=outcome,  # type: ignore[arg-type]
                    status_code=status_code, error=error, started_at=started_at or now(), duration_ms=duration_ms,
                    redactions=redactions)
        )


# The job store or broker failed (unreachable, out of memory, read-only after a failover): the job is not lost, it
# goes back to the queue, and is never acknowledged as done. Anything else unexpected is the worker's own failure.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

# The store briefly unreachable (a Redis restart, a failover): claiming a job and settling a run wait for it, with
# backoff, for at most a quarter of the visibility timeout (10 s at most), instead of giving the job back at once.
# Given back before the partner call, the job would wait a visibility timeout; after it, the partner would be called
# twice. Each step retried so is guarded by the run token, so repeating one whose answer was lost is harmless.
STORE_RIDE_OUT_S = 10.0
T = TypeVar("T")


async def ride_out_store_outage(rt: Runtime, step: Callable[[], Awaitable[T]]) -> T:
    """`await step()`, again on a lost connection (backoff 50 ms doubling to 1 s) until the ride-out time is up."""
    deadline = time.monotonic() + min(STORE_RIDE_OUT_S, rt.settings.visibility_timeout_s / 4)
    delay = 0.05
    while True:
        try:
            return await step()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


class ClaimLost(Exception):
    """Another run took the job over (or it was cancelled) while this one waited: it must not call the partner."""


@telemetry.job_run
async def run_job(job_id: str, partner: str, attempt: int) -> str:
    """Returns a one-word result for the Celery log and Flower (never content)."""
    rt = runtime()
    claim, token, raw = await ride_out_store_outage(rt, lambda: rt.store.begin_run(job_id, partner, attempt))
    if claim not in ("ok", "redelivered"):
        return claim  # missing, already done, or a stale duplicate: nothing to do
    telemetry.job_claimed(raw)
    try:
        record = rt.store.decode(job_id, raw, with_payload=True)
    except (ValueError, KeyError, TypeError) as exc:
        return await _dead_letter_unreadable(rt, job_id, token, partner, attempt, raw, exc)
    ctx = RunContext(rt, record, token, rt.config.partners[partner], attempt)
    if claim == "redelivered":
        ctx.note("redelivered", "previous worker stopped before finishing; call repeated")
    try:
        return await (embedding_run.run_claimed(ctx) if record.kind == EMBEDDING else _run_claimed(ctx))
    except (ClaimLost, streaming.RunLost):
        return "superseded"
    except call_slots.WorkerStopping:
        raise
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as exc:
        # Our failure, not the partner's: retried like a transient one, so the retry policy and the fallback chain
        # bound it, and the dead letter it may end in says what happened (the class only: texts may hold data).
        log.exception("job %s attempt %s: internal error in the worker", job_id, attempt)
        error = f"internal error in the worker ({exc.__class__.__name__})"
        ctx.note("retryable", error)
        return await _route_failure(ctx, PartnerResponse(Outcome.RETRYABLE, error=error), False)


async def clear_to_call(ctx: RunContext) -> tuple[str | None, bool]:
    """Redact for this partner, then pass its breaker and budgets: (the run's result when it ends here, whether the
    call is the breaker's probe). A failed redaction, an open breaker and a long budget wait end the run."""
    rt, record, partner = ctx.rt, ctx.record, ctx.partner.name
    try:
        _redact(ctx)
    except RedactionError as exc:  # fail closed: nothing unredacted leaves; this partner cannot take the job
        ctx.note("fatal", f"redaction failed for {partner}'s policy: {exc}")
        return await _route_failure(ctx, PartnerResponse(Outcome.FATAL, error="redaction failed"), False), False
    probe = False
    if record.reservation != f"{partner}:{ctx.attempt}":
        gate = await rt.breakers.allow(partner, ctx.partner.breaker)
        if gate == "open":
            metrics.record_breaker_rejection(partner)
            ctx.note("breaker_open", f"circuit breaker for {partner} is open")
            return await _route_failure(ctx, PartnerResponse(Outcome.RETRYABLE, error="circuit open"), True), False
        probe = gate == "probe"
        wait_s = await rt.budgets.reserve(ctx.partner, _estimate(ctx), rt.config.tenants.get(record.tenant))
        if wait_s > INLINE_WAIT_S:
            return await _wait_for_budget(ctx, wait_s), probe
        if wait_s > 0:
            await asyncio.sleep(wait_s)
    wait_s = await _admit(ctx)
    if wait_s > 0:
        return await _wait_for_budget(ctx, wait_s), probe
    return None, probe


async def _run_claimed(ctx: RunContext) -> str:
    rt, record, partner = ctx.rt, ctx.record, ctx.partner.name
    ended, probe = await clear_to_call(ctx)
    if ended is not None:
        return ended
    if record.params.get("contract"):
        ctx.contract = await rt.contract(record.params["contract"])
    else:
        ctx.contract = response_format.inline_contract(record.options)
    metrics.record_redactions(partner, ctx.redactions)
    try:
        response = await _call_partner(ctx)
    except call_slots.WorkerStopping:
        await rt.store.release_claim(record.id, ctx.token)  # queued again: the next worker's run is a first run
        raise
    await _after_call(ctx, response, probe)
    parsed: Any = None
    if response.outcome is Outcome.OK and ctx.contract is not None and not response.tool_calls:
        response, parsed = await _hold_to_contract(ctx, response)
    if response.outcome is Outcome.OK and response.text is not None:
        restore = rt.redactors[partner].restore
        output = restore(response.text, ctx.placeholders)
        parsed = _restore_inside(parsed, lambda text: restore(text, ctx.placeholders))
        tool_calls = restore_tool_calls(response.tool_calls, lambda text: restore(text, ctx.placeholders))
        if streaming.wants_stream(record) and not ctx.relayed:
            await streaming.emit_whole(rt.job_stream, record, ctx.token, ctx.attempt, output, response, tool_calls)
        webhook = _webhook(ctx, JobStatus.SUCCEEDED, output=output, parsed=parsed, usage=response.usage,
                           answered_by=partner, finish_reason=response.finish_reason, tool_calls=tool_calls)
        with telemetry.publish():
            published = await ride_out_store_outage(rt, lambda: rt.store.publish_success(
                record, ctx.token, output, response.usage, partner,
                placeholder_map=ctx.placeholders.to_json(), retention_s=job_retention_s(rt.config, record),
                parsed=parsed, webhook=webhook, finish_reason=response.finish_reason, tool_calls=tool_calls,
                logprobs=response.logprobs,
            ))
        if not published:
            return "superseded"
        if streaming.wants_stream(record):
            await streaming.end(rt.job_stream, record, job_retention_s(rt.config, record))
        _record_finished(record, "succeeded")
        await send_webhook(rt.redis, webhook)
        return "succeeded"
    return await _route_failure(ctx, response, False)


def _webhook(ctx: RunContext, status: JobStatus, **finished: Any) -> WebhookWrite | None:
    """The job's webhook delivery, carrying the finished job as the tenant will see it (never the prompt), for the
    settle step to store with the job's final status; None when the job has no webhook."""
    if not ctx.record.webhook_url:
        return None
    final = dataclasses.replace(ctx.record, status=status, finished_at=now(), **finished)
    return webhook_for(ctx.rt.store.cipher, ctx.rt.config, final, ctx.rt.settings.job_ttl_s)


@telemetry.contract_check
async def _hold_to_contract(ctx: RunContext, response: PartnerResponse) -> tuple[PartnerResponse, Any]:
    """Parse leniently, validate strictly; feed the errors back for a repair; a persistent violation fails."""
    assert ctx.contract is not None
    schema = ctx.contract.schema_
    for repair in range(ctx.partner.contract_repairs + 1):
        errors = _contract_errors(schema, response.text or "")
        if isinstance(errors, tuple):
            metrics.record_contract(ctx.partner.name, ctx.contract.name, "passed" if repair == 0 else "repaired")
            return response, errors[0]
        verdict = f"{ctx.contract.name}@{ctx.contract.version}: " + "; ".join(errors)
        last = ctx.record.history[-1]
        ctx.record.history[-1] = last.model_copy(update={"outcome": "contract_violation", "error": verdict})
        if repair == ctx.partner.contract_repairs:
            break
        ctx.outgoing += [
            Message(role="assistant", content=response.text or ""),
            Message(role="user", content="That answer does not match the required JSON Schema: " + "; ".join(errors)
                    + ". Reply again with only the corrected JSON."),
        ]
        response = await _call_partner(ctx)
        if response.outcome is not Outcome.OK:
            return response, None
    metrics.record_contract(ctx.partner.name, ctx.contract.name, "failed")
    return PartnerResponse(Outcome.CONTRACT_VIOLATION, response.status_code, error="output violates the contract"), None


def _contract_errors(schema: dict[str, Any], text: str) -> list[str] | tuple[Any]:
    """The validation errors, or a one-tuple holding the parsed value when it conforms."""
    try:
        value = parse_lenient(text, schema)
    except ValueError as exc:
        return [str(exc)]
    errors = validation_errors(schema, value)
    return errors if errors else (value,)


def _restore_inside(value: Any, restore: Callable[[str], str]) -> Any:
    """Placeholders come back inside the parsed object's strings (and keys) too."""
    if isinstance(value, str):
        return restore(value)
    if isinstance(value, list):
        return [_restore_inside(v, restore) for v in value]
    if isinstance(value, dict):
        return {restore(k): _restore_inside(v, restore) for k, v in value.items()}
    return value


@telemetry.redact
def _redact(ctx: RunContext) -> None:
    """Redact the ORIGINAL messages for this partner; placeholders are numbered per job across messages."""
    redactor = ctx.rt.redactors[ctx.partner.name]
    salt = ctx.rt.tenant_salt(ctx.record.tenant)
    counts: Counter[str] = Counter()
    for message in ctx.record.messages:
        ctx.outgoing.append(redact_message(redactor, message, ctx.placeholders, salt, counts))
    ctx.redactions = dict(counts)


def _estimate(ctx: RunContext) -> int:
    chars = sum(m.size() for m in ctx.outgoing)
    if ctx.record.kind == EMBEDDING:  # an embedding has no output tokens
        return estimate_tokens(chars, 0)
    return estimate_tokens(chars, ctx.record.params.get("max_tokens") or ctx.partner.max_output_tokens)


@telemetry.budget
async def _admit(ctx: RunContext) -> float:
    """Admission right before the call; short waits are slept through, a long one is returned."""
    for _ in range(ADMIT_TRIES):
        wait_s = await ctx.rt.budgets.admit(ctx.partner, _estimate(ctx), ctx.rt.config.tenants.get(ctx.record.tenant))
        if wait_s == 0 or wait_s > ADMIT_INLINE_WAIT_S:
            return wait_s
        await asyncio.sleep(wait_s)
    return ADMIT_INLINE_WAIT_S


@telemetry.budget_wait
async def _wait_for_budget(ctx: RunContext, wait_s: float) -> str:
    """Hold the reservation, give the worker slot back, and come back when the budget covers it."""
    next_attempt = ctx.attempt + 1
    await ride_out_store_outage(ctx.rt, lambda: ctx.rt.store.move_on(
        ctx.record, ctx.token, status=JobStatus.WAITING, partner=ctx.partner.name, attempt=next_attempt,
        delay_s=wait_s, reservation=f"{ctx.partner.name}:{next_attempt}",
    ))
    metrics.record_budget_wait(ctx.partner.name)
    return "waiting"


@telemetry.partner_call
async def _call_partner(ctx: RunContext) -> PartnerResponse:
    adapter = ctx.rt.adapters[ctx.partner.name]
    contract = ctx.contract
    request = CallRequest(
        messages=ctx.outgoing,
        max_tokens=ctx.record.params.get("max_tokens"),
        temperature=ctx.record.params.get("temperature"),
        output=response_format.output_schema(contract, ctx.record.options),
        options=ctx.record.options,
    )
    if streaming.streams_live(ctx.record, adapter, contract is not None):
        ctx.relayed = True
        restore = ctx.rt.redactors[ctx.partner.name].restore

        def call() -> Awaitable[PartnerResponse]:
            return streaming.relay(ctx.rt.job_stream, adapter, request, job_id=ctx.record.id, token=ctx.token,
                                   attempt=ctx.attempt, restore=lambda text: restore(text, ctx.placeholders))
    else:

        def call() -> Awaitable[PartnerResponse]:
            return adapter.call(request)

    response, started_wall, elapsed_s = await call_in_slot(ctx, call)
    account_for_call(ctx, response, started_wall, elapsed_s, response.raw)
    return response


async def call_in_slot(ctx: RunContext, call: Callable[[], Awaitable[PartnerResponse]]
                       ) -> tuple[PartnerResponse, float, float]:
    """`call()` in one of the lane's call slots, if the run still holds the job once it has one: (the response, when
    the call started (wall clock), how long it took in seconds)."""
    waiting_since = time.perf_counter()
    async with call_slots.slot(ctx.record.lane):
        started_wall, started = now(), time.perf_counter()
        if started - waiting_since > CLAIM_RECHECK_AFTER_S and not await ctx.rt.store.holds_claim(
            ctx.record.id, ctx.token
        ):
            raise ClaimLost()
        with metrics.calls_in_flight(ctx.partner.name):
            response = await call()
    return response, started_wall, time.perf_counter() - started


def account_for_call(ctx: RunContext, response: PartnerResponse, started_wall: float, elapsed_s: float,
                     priced: dict[str, Any] | None) -> None:
    """A call's metrics, its cost (metered from `priced`, what of the answer prices it) and its history entry."""
    metrics.record_call(ctx.partner.name, response.outcome.value, elapsed_s)
    cost = metering.meter_call(ctx.record.tenant, ctx.partner, response.usage, priced)
    if cost is not None:
        ctx.record.cost_nanousd = (ctx.record.cost_nanousd or 0) + cost
    metrics.record_tokens(ctx.partner.name, response.usage, metering.usd(cost) if cost else None)
    ctx.note(response.outcome.value, response.error, response.status_code,
             round(elapsed_s * 1000, 3), redactions=ctx.redactions, started_at=started_wall)


async def _after_call(ctx: RunContext, response: PartnerResponse, probe: bool) -> None:
    """Feed the shared breaker and budgets with what the partner said."""
    rt, partner = ctx.rt, ctx.partner
    healthy = response.outcome is not Outcome.RETRYABLE
    if probe or not healthy:
        await rt.breakers.record(partner.name, partner.breaker, healthy, probe)
    else:
        rt.breakers.note_success(partner.name, partner.breaker)
    if response.status_code == 429:
        await rt.budgets.block(partner, response.retry_after_s or 1.0)
    if response.outcome is Outcome.OK:
        await rt.budgets.reconcile(partner, _estimate(ctx), response.usage.total_tokens)


@telemetry.route_failure
async def _route_failure(ctx: RunContext, response: PartnerResponse, breaker_open: bool) -> str:
    record = ctx.record
    decision = decide(ctx.rt.config, record.requested_partner, ctx.partner.name, record.history, response,
                      breaker_open=breaker_open, tenant=record.tenant)
    if decision.action == "dead_letter":
        webhook = _webhook(ctx, JobStatus.DEAD_LETTERED, error=decision.reason)
        if await ride_out_store_outage(ctx.rt, lambda: ctx.rt.store.finish_unsuccessful(
                record, ctx.token, JobStatus.DEAD_LETTERED, decision.reason,
                retention_s=job_retention_s(ctx.rt.config, record), webhook=webhook)):
            _record_finished(record, "dead_lettered")
            if streaming.wants_stream(record):
                await streaming.end(ctx.rt.job_stream, record, job_retention_s(ctx.rt.config, record))
            await send_webhook(ctx.rt.redis, webhook)
        return "dead_lettered"
    if decision.action == "retry":
        metrics.record_retry(ctx.partner.name)
    else:
        metrics.record_fallback(ctx.partner.name, decision.partner)
    status = JobStatus.RETRYING if decision.action == "retry" else JobStatus.QUEUED
    await ride_out_store_outage(ctx.rt, lambda: ctx.rt.store.move_on(
        record, ctx.token, status=status, partner=decision.partner, attempt=ctx.attempt + 1,
        delay_s=decision.delay_s,
    ))
    return decision.action


async def dead_letter_internal_error(job_id: str, partner: str, attempt: int, exc: Exception) -> str:
    """Take over the job's run and dead-letter it with the error class (never its text, which may hold data)."""
    rt = runtime()
    claim, token, raw = await rt.store.begin_run(job_id, partner, attempt)
    if claim not in ("ok", "redelivered"):
        return claim
    return await _dead_letter_unreadable(rt, job_id, token, partner, attempt, raw,
                                         RuntimeError(f"internal error in the worker ({exc.__class__.__name__})"),
                                         what="could not be routed")


async def _dead_letter_unreadable(
    rt: Runtime, job_id: str, token: str, partner: str, attempt: int, raw: dict[str, str], exc: Exception,
    what: str = "unreadable job",
) -> str:
    """A poison job (a stored record that cannot be read, or a failure while routing one) leaves the queue at once,
    with the reason kept."""
    readable = isinstance(exc, ValueError | RuntimeError)
    reason = f"{what}: " + (str(exc) if readable else f"malformed record ({exc.__class__.__name__})")
    record = JobRecord(
        id=job_id, tenant=raw.get("tenant", "?"), partner=partner, requested_partner=partner,
        status=JobStatus.RUNNING, attempt=attempt, created_at=float(raw.get("created_at") or now()),
    )
    record.history.append(
        Attempt(partner=partner, attempt=attempt, outcome="fatal", error=reason, started_at=now(), duration_ms=0.0)
    )
    if await rt.store.finish_unsuccessful(record, token, JobStatus.DEAD_LETTERED, reason,
                                          retention_s=job_retention_s(rt.config, record)):
        _record_finished(record, "dead_lettered")
    return "dead_lettered"


def _record_finished(record: JobRecord, outcome: str) -> None:
    metering.note_job(record.tenant, record.partner)
    queue_wait = (record.started_at - record.created_at) if record.started_at else None
    metrics.record_job_finished(record.requested_partner, record.tenant, outcome, queue_wait, now() - record.created_at)
