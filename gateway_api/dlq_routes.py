"""Operator endpoints for the dead-letter queue: list, show, replay, purge. Admin tenants only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway_api.deps import Services, require_admin
from gateway_api.openapi import errors
from gateway_core.errors import RequestError
from gateway_core.jobs.dlq import (
    MAX_PAGE,
    DeadLetterDetail,
    DeadLetterError,
    DeadLetterNotFound,
    DeadLetterPage,
    DeadLetters,
    NotDeadLettered,
    PartnerNotAllowed,
    PurgeResult,
    ReplayResult,
    UnknownPartner,
)

router = APIRouter(
    prefix="/v1/admin/dead-letters", tags=["operations"], responses=errors(403),
    dependencies=[Depends(require_admin("the dead-letter queue"))],
)
MAX_AGE_S = 100 * 365 * 24 * 3600  # a cutoff further back than any dead letter can be: older_than_s stays in range


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partner: str | None = Field(
        default=None, min_length=1, description="Partner to send the job to; default: the partner it was submitted for"
    )


async def dead_letters(request: Request) -> DeadLetters:
    """One DeadLetters per app, built from the running services."""
    state = request.app.state
    found: DeadLetters | None = getattr(state, "dead_letters", None)
    if found is None:
        svc: Services = state.services
        found = DeadLetters(svc.redis, svc.store, svc.config)
        state.dead_letters = found
    return found


Queue = Annotated[DeadLetters, Depends(dead_letters)]


def _api_error(exc: DeadLetterError, *, not_dead_lettered_status: int = 409) -> RequestError:
    if isinstance(exc, DeadLetterNotFound):
        return RequestError(404, str(exc), exc.code, "job_id")
    if isinstance(exc, NotDeadLettered):
        return RequestError(not_dead_lettered_status, str(exc), exc.code, "job_id")
    if isinstance(exc, UnknownPartner):  # as POST /v1/jobs answers an unknown partner
        return RequestError(404, str(exc), exc.code, "partner")
    if isinstance(exc, PartnerNotAllowed):  # as POST /v1/jobs answers a partner the tenant may not use
        return RequestError(403, str(exc), exc.code, "partner")
    return RequestError(409, str(exc), exc.code)


@router.get("", response_model=DeadLetterPage, summary="List dead letters, newest first")
async def list_dead_letters(
    queue: Queue,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Entries per page")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=2**31, description="Matching entries to skip (next_offset of the last page)")
    ] = 0,
    partner: Annotated[str | None, Query(description="Only jobs requested for, or last tried on, this partner")] = None,
    tenant_name: Annotated[str | None, Query(alias="tenant", description="Only this tenant's jobs")] = None,
) -> DeadLetterPage:
    return await queue.list(limit=limit, offset=offset, partner=partner, tenant=tenant_name)


@router.get("/{job_id}", response_model=DeadLetterDetail, summary="One dead letter with its attempt history",
            responses=errors(404))
async def show_dead_letter(job_id: str, queue: Queue) -> DeadLetterDetail:
    try:
        return await queue.show(job_id)
    except DeadLetterError as exc:
        raise _api_error(exc, not_dead_lettered_status=404) from None


@router.post(
    "/{job_id}/replay",
    response_model=ReplayResult,
    status_code=202,
    summary="Send a dead letter back to a partner, keeping its job id",
    responses=errors(402, 404, 409),
)
async def replay_dead_letter(job_id: str, queue: Queue, body: ReplayRequest | None = None) -> ReplayResult:
    try:
        return await queue.replay(job_id, body.partner if body else None)
    except DeadLetterError as exc:
        raise _api_error(exc) from None


@router.delete("/{job_id}", response_model=PurgeResult, summary="Delete one dead letter", responses=errors(404, 409))
async def purge_dead_letter(job_id: str, queue: Queue) -> PurgeResult:
    try:
        return await queue.purge(job_id)
    except DeadLetterError as exc:
        raise _api_error(exc) from None


@router.delete("", response_model=PurgeResult, summary="Delete every dead letter, or those older than a cutoff")
async def purge_dead_letters(
    queue: Queue,
    older_than_s: Annotated[
        float | None,
        Query(ge=0, le=MAX_AGE_S, allow_inf_nan=False,
              description="Only dead letters dead-lettered more than this many seconds ago"),
    ] = None,
) -> PurgeResult:
    return PurgeResult(purged=await queue.purge_all(older_than_s))


def install(app: FastAPI) -> None:
    """Add the dead-letter endpoints to the app (called from create_app)."""
    app.include_router(router)
