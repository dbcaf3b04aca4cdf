"""Spend budgets per tenant (config `budgets`): daily and monthly caps in US dollars, by UTC day and month.

Hard: a tenant whose metered spend (`gateway_core.tenants.metering`) has reached a cap is refused at submit with 402
and a message naming the spend, the cap and when it resets; nothing is stored or enqueued. Jobs already accepted still
run, so a cap can be overshot by the jobs in flight (and by up to a second of counts not yet written).
Soft: spend past `soft_ratio` of a cap logs one warning per tenant, cap and period, and shows on the API's /metrics
(`fedgate_tenant_budget_used_ratio`, `fedgate_tenant_budget_over_soft`, `fedgate_tenant_budget_exhausted`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import redis
import redis.asyncio as aioredis
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel

from gateway_core.config import Budgets, GatewayConfig, TenantConfig
from gateway_core.errors import RequestError
from gateway_core.fleet import keys
from gateway_core.fleet.metrics import label
from gateway_core.tenants.metering import format_usd, nanos, spent_nanousd, usd, utc_now

log = logging.getLogger("fedgate.budgets")

Period = Literal["daily", "monthly"]
PERIODS: tuple[Period, ...] = ("daily", "monthly")


@dataclass(frozen=True)
class Spend:
    day_nanousd: int = 0
    month_nanousd: int = 0

    def of(self, period: Period) -> int:
        return self.day_nanousd if period == "daily" else self.month_nanousd


class BudgetStatus(BaseModel):
    period: Period
    budget_usd: float
    spent_usd: float
    used_ratio: float
    soft_ratio: float
    state: Literal["ok", "warning", "exceeded"]
    resets_at: datetime
    resets_in_s: float


def caps(budgets: Budgets) -> dict[Period, float]:
    found: dict[Period, float | None] = {"daily": budgets.daily_usd, "monthly": budgets.monthly_usd}
    return {period: cap for period, cap in found.items() if cap is not None}


def next_reset(period: Period, at: datetime) -> datetime:
    """The next 00:00 UTC (daily) or the first of next month 00:00 UTC (monthly)."""
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return midnight + timedelta(days=1)
    first = midnight.replace(day=1)
    return first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)


def statuses(budgets: Budgets, spend: Spend, at: datetime) -> list[BudgetStatus]:
    found: list[BudgetStatus] = []
    for period, cap in caps(budgets).items():
        spent, limit = spend.of(period), nanos(cap)
        ratio = spent / limit
        state: Literal["ok", "warning", "exceeded"] = (
            "exceeded" if spent >= limit else "warning" if ratio >= budgets.soft_ratio else "ok"
        )
        resets = next_reset(period, at)
        found.append(BudgetStatus(period=period, budget_usd=cap, spent_usd=usd(spent), used_ratio=round(ratio, 6),
                                  soft_ratio=budgets.soft_ratio, state=state, resets_at=resets,
                                  resets_in_s=round((resets - at).total_seconds(), 3)))
    return found


def span(seconds: float) -> str:
    """3h12m, 4d7h, 12m, 40s."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def refusal(tenant: str, status: BudgetStatus) -> str:
    when = status.resets_at.strftime("%H:%M UTC" if status.period == "daily" else "%Y-%m-%d %H:%M UTC")
    field = "daily_usd" if status.period == "daily" else "monthly_usd"
    return (f"tenant {tenant!r} has spent {format_usd(status.spent_usd)} of its {status.period} budget "
            f"{format_usd(status.budget_usd)}; resets at {when} (in {span(status.resets_in_s)}); "
            f"raise budgets.{field} in the config or wait. Nothing was queued.")


async def read_spend(client: aioredis.Redis, tenants: list[str], at: datetime) -> dict[str, Spend]:
    """Each tenant's spend today and this month, in one round trip."""
    day, month = at.strftime("%Y-%m-%d"), at.strftime("%Y-%m")
    async with client.pipeline(transaction=False) as pipe:
        for tenant in tenants:
            pipe.hgetall(keys.usage(tenant, day))
            pipe.hgetall(keys.usage(tenant, month))
        replies = await pipe.execute()
    return {tenant: Spend(spent_nanousd(replies[2 * i]), spent_nanousd(replies[2 * i + 1]))
            for i, tenant in enumerate(tenants)}


_warned: set[tuple[str, str, str, str]] = set()
_warned_lock = threading.Lock()


def warn_once(tenant: str, status: BudgetStatus, at: datetime) -> None:
    """One log line per tenant, period, period instance and state in this process (names and amounts only)."""
    window = at.strftime("%Y-%m-%d" if status.period == "daily" else "%Y-%m")
    mark = (tenant, status.period, window, status.state)
    with _warned_lock:
        if mark in _warned:
            return
        _warned.add(mark)
    what = "reached" if status.state == "exceeded" else f"passed {status.soft_ratio:.0%} of"
    log.warning("tenant %s has %s its %s budget: %s of %s; resets in %s", tenant, what, status.period,
                format_usd(status.spent_usd), format_usd(status.budget_usd), span(status.resets_in_s))


async def budget_statuses(client: aioredis.Redis, tenant: TenantConfig, at: datetime | None = None
                          ) -> list[BudgetStatus]:
    if not caps(tenant.budgets):
        return []
    at = at or utc_now()
    spend = (await read_spend(client, [tenant.name], at))[tenant.name]
    return statuses(tenant.budgets, spend, at)


async def check_budget(client: aioredis.Redis, tenant: TenantConfig, at: datetime | None = None) -> None:
    """Raise RequestError(402) when the tenant has reached a cap; costs no Redis call without caps."""
    if not caps(tenant.budgets):
        return
    at = at or utc_now()
    found = await budget_statuses(client, tenant, at)
    for status in found:
        if status.state != "ok":
            warn_once(tenant.name, status, at)
    exceeded = [s for s in found if s.state == "exceeded"]
    if exceeded:
        latest = max(exceeded, key=lambda s: s.resets_at)  # waiting for the daily reset does not lift a monthly cap
        raise RequestError(402, refusal(tenant.name, latest), "budget_exceeded")


class SpendCollector(Collector):
    """Per tenant, spend today and this month; for tenants with caps, how much of each cap is used."""

    def __init__(self, config: GatewayConfig, spend: dict[str, Spend] | None, at: datetime) -> None:
        self.config = config
        self.spend = spend
        self.at = at

    def collect(self) -> Iterator[Metric]:
        if self.spend is None:
            return
        spent = GaugeMetricFamily("fedgate_tenant_spend_usd", "Metered spend this UTC day (daily) and month (monthly)",
                                  labels=["tenant", "period"])
        cap = GaugeMetricFamily("fedgate_tenant_budget_usd", "The tenant's spend cap", labels=["tenant", "period"])
        used = GaugeMetricFamily("fedgate_tenant_budget_used_ratio", "Spend over the cap (1: submissions refused)",
                                 labels=["tenant", "period"])
        soft = GaugeMetricFamily("fedgate_tenant_budget_over_soft", "1 when spend passed soft_ratio of the cap",
                                 labels=["tenant", "period"])
        hard = GaugeMetricFamily("fedgate_tenant_budget_exhausted", "1 when the cap is reached (submissions get 402)",
                                 labels=["tenant", "period"])
        for name, tenant in self.config.tenants.items():
            spend = self.spend.get(name, Spend())
            for period in PERIODS:
                spent.add_metric([label(name), period], usd(spend.of(period)))
            for status in statuses(tenant.budgets, spend, self.at):
                values = [label(name), status.period]
                cap.add_metric(values, status.budget_usd)
                used.add_metric(values, status.used_ratio)
                soft.add_metric(values, 1.0 if status.state != "ok" else 0.0)
                hard.add_metric(values, 1.0 if status.state == "exceeded" else 0.0)
                if status.state != "ok":
                    warn_once(name, status, self.at)
        yield from (spent, cap, used, soft, hard)


async def spend_collector(client: aioredis.Redis, config: GatewayConfig) -> SpendCollector:
    """A collector for one scrape; empty (and a warning logged) when Redis cannot be read."""
    at = utc_now()
    try:
        spend: dict[str, Spend] | None = await read_spend(client, list(config.tenants), at)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("metrics: could not read tenant spend from Redis (%s)", exc.__class__.__name__)
        spend = None
    return SpendCollector(config, spend, at)
