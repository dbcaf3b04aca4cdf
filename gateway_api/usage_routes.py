"""Usage and spend: `GET /v1/usage` (the calling tenant's own) and `GET /v1/admin/usage?tenant=T` (admin key).

Rows come from the metered counters (`gateway_core.tenants.metering`), grouped by any of partner, day and month;
the report also shows where the tenant stands against its budgets (`gateway_core.tenants.spending`).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel

from gateway_api.deps import Tenant, require_admin, services
from gateway_api.openapi import errors
from gateway_core.config import TenantConfig
from gateway_core.errors import RequestError
from gateway_core.tenants import metering, spending

router = APIRouter(tags=["usage"])

_WORD = "|".join("".join(f"[{c}{c.upper()}]" for c in name) for name in metering.DIMENSIONS)
BY_PATTERN = rf"^ *({_WORD})? *(, *({_WORD})? *)*$"
By = Annotated[str, Query(max_length=200, json_schema_extra={"pattern": BY_PATTERN},
                          description="Group rows by any of partner, day, month (comma-separated; empty: one row)")]
Days = Annotated[int, Query(ge=1, le=metering.MAX_DAYS, description="The last N UTC days, today included")]


class UsageReport(BaseModel):
    tenant: str
    by: list[str]
    first_day: str
    last_day: str
    rows: list[metering.UsageRow]
    total: metering.UsageCounts
    budgets: list[spending.BudgetStatus]


async def build_report(request: Request, tenant: TenantConfig, by: str, days: int) -> UsageReport:
    svc = services(request)
    try:
        dimensions = metering.parse_by(by)
        if not re.fullmatch(BY_PATTERN, by):  # what the schema says: names, commas and spaces only
            raise ValueError(f"cannot group by {by!r}: use any of {', '.join(metering.DIMENSIONS)}, comma-separated")
    except ValueError as exc:
        raise RequestError(422, str(exc), "invalid_request", "by") from None
    at = metering.utc_now()
    window = metering.day_range(days, at.date())
    counts = await metering.read_days(svc.redis, tenant.name, window)
    rows = metering.group(counts, dimensions)
    return UsageReport(
        tenant=tenant.name, by=dimensions, first_day=window[0].isoformat(), last_day=window[-1].isoformat(),
        rows=rows, total=metering.total(rows), budgets=await spending.budget_statuses(svc.redis, tenant, at),
    )


@router.get("/v1/usage", response_model=UsageReport, summary="The calling tenant's usage, cost and budgets")
async def own_usage(request: Request, who: Tenant, by: By = "partner", days: Days = 30) -> UsageReport:
    return await build_report(request, who, by, days)


@router.get("/v1/admin/usage", response_model=UsageReport, summary="One tenant's usage, cost and budgets",
            tags=["operations"], dependencies=[Depends(require_admin("usage of other tenants"))],
            responses=errors(403, 404))
async def tenant_usage(
    request: Request,
    tenant: Annotated[str, Query(min_length=1, description="Tenant name from the config")],
    by: By = "partner",
    days: Days = 30,
) -> UsageReport:
    config = services(request).config
    if tenant not in config.tenants:
        known = ", ".join(sorted(config.tenants))
        raise RequestError(404, f"no tenant {tenant!r} in the config: use one of {known}", "tenant_not_found", "tenant")
    return await build_report(request, config.tenants[tenant], by, days)


def install(app: FastAPI) -> None:
    app.include_router(router)
