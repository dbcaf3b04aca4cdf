"""One embedding job through the fleet, from its claim on (workers/pipeline.py's run_job dispatches here on the
job's kind): the chat pipeline's redaction, breaker, budgets, call slots, metering, routing and settling, with the
partner's embedding adapter. No output contract, and no placeholder restore: the vectors are of the redacted texts
and hold nothing to restore. No cache anywhere: every job calls its partner.
"""

from __future__ import annotations

from gateway_core.fleet import metrics
from gateway_core.jobs.models import JobStatus, Usage
from gateway_core.jobs.store import job_retention_s
from gateway_core.partners.adapters.base import CallRequest, Outcome, PartnerResponse
from gateway_core.partners.adapters.embeddings import EmbeddingAdapter, embedding_refusal

# pipeline imports this module to dispatch to it: its names are read at call time (pipeline.X), never at import.
from workers import call_slots, pipeline, telemetry
from workers.notify import send_webhook


async def run_claimed(ctx: pipeline.RunContext) -> str:
    rt, record, partner = ctx.rt, ctx.record, ctx.partner.name
    adapter = rt.embedding_adapters.get(partner)
    if adapter is None:  # a fallback that has no embeddings: this partner cannot take the job, the next may
        refusal = embedding_refusal(ctx.partner) or "no embedding adapter"
        ctx.note("fatal", refusal)
        return await pipeline._route_failure(ctx, PartnerResponse(Outcome.FATAL, error=refusal), False)
    ended, probe = await pipeline.clear_to_call(ctx)  # redaction (fail closed), breaker, budgets, as for chat jobs
    if ended is not None:
        return ended
    metrics.record_redactions(partner, ctx.redactions)
    try:
        response = await _call_partner(ctx, adapter)
    except call_slots.WorkerStopping:
        await rt.store.release_claim(record.id, ctx.token)
        raise
    await pipeline._after_call(ctx, response, probe)
    if response.outcome is Outcome.OK and response.text is not None:
        webhook = pipeline._webhook(ctx, JobStatus.SUCCEEDED, output=response.text, usage=response.usage,
                                    answered_by=partner)
        with telemetry.publish():
            published = await pipeline.ride_out_store_outage(rt, lambda: rt.store.publish_success(
                record, ctx.token, response.text or "", response.usage, partner,
                retention_s=job_retention_s(rt.config, record), webhook=webhook,
            ))
        if not published:
            return "superseded"
        pipeline._record_finished(record, "succeeded")
        await send_webhook(rt.redis, webhook)
        return "succeeded"
    return await pipeline._route_failure(ctx, response, False)


@telemetry.partner_call
async def _call_partner(ctx: pipeline.RunContext, adapter: EmbeddingAdapter) -> PartnerResponse:
    """One embedding call in a call slot, metered and noted in the job's history like a chat call."""
    params = ctx.record.params
    extra = {name: params[name] for name in ("dimensions", "user") if params.get(name) is not None}
    if not adapter.takes_user:
        extra.pop("user", None)  # the API refused `user` for such a partner; a fallback to one goes without it
    request = CallRequest(messages=ctx.outgoing, extra=extra)
    response, started_wall, elapsed_s = await pipeline.call_in_slot(ctx, lambda: adapter.call(request))
    if response.outcome is Outcome.OK and response.usage.prompt_tokens == 0:  # a wire that reports no usage
        estimated = Usage(prompt_tokens=pipeline._estimate(ctx))
        response = PartnerResponse(response.outcome, response.status_code, response.text, estimated,
                                   raw=response.raw)
    pipeline.account_for_call(ctx, response, started_wall, elapsed_s, _model_only(response.raw))
    return response


def _model_only(raw: dict[str, object] | None) -> dict[str, object]:
    """What metering reads of the answer (the model it reports, to price it): not the vectors."""
    return {"model": raw.get("model")} if raw else {}
