"""Token buckets against a real Redis (a database of each test's own): reservations in order, admission never in
debt, tenant budgets, 429 pauses."""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import redis.asyncio as aioredis

from gateway_core.config import GatewayConfig
from gateway_core.partners.ratelimit import PartnerBudgets


def config(partner_rpm: int | None = None, tenant_rpm: int | None = None) -> GatewayConfig:
    suffix = os.urandom(3).hex()
    partner: dict[str, Any] = {"adapter": "openai", "base_url": "http://x/v1", "model": "m"}
    if partner_rpm:
        partner["limits"] = {"requests_per_minute": partner_rpm}
    tenant: dict[str, Any] = {"api_key": "k"}
    if tenant_rpm:
        tenant["limits"] = {"requests_per_minute": tenant_rpm}
    return GatewayConfig.model_validate({
        "partners": {f"p-{suffix}": {**partner, "name": f"p-{suffix}"}},
        "tenants": {f"t-{suffix}": {**tenant, "name": f"t-{suffix}"}},
    })


def run(redis_url: str, body: Any) -> Any:
    async def main() -> Any:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await body(PartnerBudgets(client))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_reservations_are_handed_out_in_order_at_the_rate(redis_url: str) -> None:
    cfg = config(partner_rpm=600)  # 10/s, burst of 5
    partner = next(iter(cfg.partners.values()))

    async def body(budgets: PartnerBudgets) -> list[float]:
        return [await budgets.reserve(partner, 10) for _ in range(15)]

    waits = run(redis_url, body)
    assert waits[:5] == [0.0] * 5
    assert all(later > earlier for earlier, later in itertools.pairwise(waits[5:]))
    assert 0.9 <= waits[-1] <= 1.1  # the 15th call: 10 beyond the burst, at 10 per second


def test_admission_never_goes_into_debt(redis_url: str) -> None:
    cfg = config(partner_rpm=60)  # 1/s, burst 1
    partner = next(iter(cfg.partners.values()))

    async def body(budgets: PartnerBudgets) -> tuple[float, float, float]:
        return await budgets.admit(partner, 1), await budgets.admit(partner, 1), await budgets.admit(partner, 1)

    first, second, third = run(redis_url, body)
    assert first == 0.0
    assert 0.9 <= second <= 1.0 and 0.9 <= third <= 1.0  # refused twice, nothing taken: same wait


def test_a_tenant_budget_applies_across_partners(redis_url: str) -> None:
    cfg = config(tenant_rpm=60)
    partner, tenant = next(iter(cfg.partners.values())), next(iter(cfg.tenants.values()))

    async def body(budgets: PartnerBudgets) -> tuple[float, float, float]:
        free = await budgets.reserve(partner, 1)  # no tenant given: the partner has no limit
        return free, await budgets.reserve(partner, 1, tenant), await budgets.reserve(partner, 1, tenant)

    free, first, second = run(redis_url, body)
    assert free == 0.0 and first == 0.0
    assert 0.9 <= second <= 1.0


def test_a_partner_429_pauses_the_budget_for_its_retry_after(redis_url: str) -> None:
    cfg = config(partner_rpm=6000)
    partner = next(iter(cfg.partners.values()))

    async def body(budgets: PartnerBudgets) -> float:
        await budgets.block(partner, 5.0)
        return await budgets.admit(partner, 1)

    assert 4.8 <= run(redis_url, body) <= 5.1


def test_tokens_are_estimated_then_reconciled_with_reported_usage(redis_url: str) -> None:
    suffix = os.urandom(3).hex()
    cfg = GatewayConfig.model_validate({
        "partners": {f"p-{suffix}": {"name": f"p-{suffix}", "adapter": "openai", "base_url": "http://x/v1",
                                     "model": "m", "limits": {"tokens_per_minute": 60_000}}},
        "tenants": {"t": {"api_key": "k"}},
    })
    partner = next(iter(cfg.partners.values()))  # 1,000 tokens/s, burst 500

    async def body(budgets: PartnerBudgets) -> tuple[float, float, float]:
        assert await budgets.reserve(partner, 400) == 0.0
        short = await budgets.reserve(partner, 400)  # 300 short: waits ~0.3 s
        await budgets.reconcile(partner, 400, 50)  # the first call really used 50: 350 come back
        after = await budgets.level(partner)
        return short, after["tokens"], await budgets.reserve(partner, 200)

    short, level, next_wait = run(redis_url, body)
    assert 0.25 <= short <= 0.35
    assert level >= 40  # was about -300 before the 350 came back
    assert next_wait <= 0.2
