"""Metering against a real redis-server (a database of each test's own): counters written per day and month, read
back, and the budget check reading what a tenant spent."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date
from typing import TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from gateway_core.config import TenantConfig
from gateway_core.errors import RequestError
from gateway_core.fleet import keys
from gateway_core.jobs.models import Usage
from gateway_core.tenants import metering, spending
from tests.helpers import with_redis
from tests.unit.test_metering import AT, PRICE, no_pending_counts, partner, tenant  # noqa: F401 - the autouse fixture

T = TypeVar("T")


def run(redis_url: str, body: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    return with_redis(redis_url, body)


@pytest.fixture()
def tenant_name() -> str:
    return "t-metered"


def test_calls_and_jobs_are_counted_in_memory_then_written_per_day_and_month(
    redis_url: str, tenant_name: str
) -> None:
    priced, free = partner("priced", **{"m": PRICE}), partner("free")
    assert metering.meter_call(tenant_name, priced, Usage(prompt_tokens=10, completion_tokens=20),
                               day="2025-03-31") == 225_000
    assert metering.meter_call(tenant_name, priced, Usage(prompt_tokens=4, completion_tokens=0),
                               day="2025-03-31") == 10_000
    assert metering.meter_call(tenant_name, priced, Usage(), day="2025-04-01") == 0  # a failed call: no usage
    assert metering.meter_call(tenant_name, free, Usage(prompt_tokens=7, completion_tokens=1), day="2025-04-01") is None
    metering.note_job(tenant_name, "priced", day="2025-03-31")

    def read(client: redis.Redis) -> dict[str, dict[str, str]]:
        return {period: client.hgetall(keys.usage(tenant_name, period))
                for period in ("2025-03-31", "2025-04-01", "2025-03", "2025-04")}

    assert run(redis_url, metering.flush_usage) > 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        seen = read(client)
        assert seen["2025-03-31"] == {"priced:calls": "2", "priced:prompt_tokens": "14",
                                      "priced:completion_tokens": "20", "priced:cost_nanousd": "235000",
                                      "priced:jobs": "1"}
        assert seen["2025-03"] == seen["2025-03-31"]
        assert seen["2025-04-01"] == {"priced:calls": "1", "free:calls": "1", "free:prompt_tokens": "7",
                                      "free:completion_tokens": "1"}
        assert 0 < client.ttl(keys.usage(tenant_name, "2025-04")) <= metering.USAGE_TTL_S
        assert run(redis_url, metering.flush_usage) == 0  # nothing new: no write
        metering.meter_call(tenant_name, priced, Usage(prompt_tokens=1), day="2025-03-31")
        assert metering.flush_usage_sync(client) == 3  # calls, prompt_tokens, cost_nanousd
        assert client.hget(keys.usage(tenant_name, "2025-03"), "priced:prompt_tokens") == "15"
    finally:
        client.close()


def test_read_days_parses_what_flush_wrote(redis_url: str, tenant_name: str) -> None:
    metering.meter_call(tenant_name, partner("a", **{"m": PRICE}), Usage(prompt_tokens=2), day="2025-05-02")
    metering.note_job(tenant_name, "a", day="2025-05-02")

    async def body(client: aioredis.Redis) -> dict[str, dict[str, metering.UsageCounts]]:
        await metering.flush_usage(client)
        return await metering.read_days(client, tenant_name, metering.day_range(3, date(2025, 5, 3)))

    found = run(redis_url, body)
    assert list(found) == ["2025-05-02"]
    assert found["2025-05-02"]["a"] == metering.UsageCounts(jobs=1, calls=1, prompt_tokens=2, cost_nanousd=5000)



# --- budgets ---------------------------------------------------------------------------------------------------

def test_check_budget_refuses_with_402_naming_the_cap_that_resets_last(
    redis_url: str, tenant_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    day, month = AT.strftime("%Y-%m-%d"), AT.strftime("%Y-%m")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(keys.usage(tenant_name, day), mapping={"a:cost_nanousd": 700_000_000, "b:cost_nanousd": 100_000_000,
                                                       "a:calls": 99})
    client.hset(keys.usage(tenant_name, month), mapping={"a:cost_nanousd": 5_000_000_000})
    client.close()

    def check(who: TenantConfig) -> None:
        run(redis_url, lambda c: spending.check_budget(c, who, AT))

    with caplog.at_level(logging.WARNING, logger="fedgate.budgets"):
        check(tenant(tenant_name, daily_usd=1, monthly_usd=10))  # 80% of the daily cap: allowed, one warning
        check(tenant(tenant_name, daily_usd=1, monthly_usd=10))
    warnings = [r.getMessage() for r in caplog.records if tenant_name in r.getMessage()]
    assert warnings == [f"tenant {tenant_name} has passed 80% of its daily budget: $0.80 of $1.00; resets in 3h12m"]

    with pytest.raises(RequestError) as caught:
        check(tenant(tenant_name, daily_usd=0.8, monthly_usd=10))
    assert (caught.value.status_code, caught.value.code) == (402, "budget_exceeded")
    assert "daily budget $0.80" in str(caught.value)
    with pytest.raises(RequestError, match=r"monthly budget \$5\.00; resets at 2025-04-01"):
        check(tenant(tenant_name, daily_usd=0.5, monthly_usd=5))  # both reached: waiting a day would not help
