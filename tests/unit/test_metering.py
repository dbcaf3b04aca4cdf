"""Metering and budgets: cost arithmetic, counters in memory, day and month windows, budget verdicts, config. The
counters' writes to Redis and the budget check's reads are tested in tests/integration/test_metering.py."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from gateway_core.config import Budgets, GatewayConfig, PartnerConfig, Price, TenantConfig, load_config
from gateway_core.errors import ConfigError
from gateway_core.jobs.models import Usage
from gateway_core.tenants import metering, spending

T = TypeVar("T")
PRICE = Price(input_per_million_usd=2.5, output_per_million_usd=10)


def partner(name: str = "p", model: str = "m", **prices: Price) -> PartnerConfig:
    return PartnerConfig(name=name, adapter="openai", base_url="http://p.example/v1", model=model, prices=prices)


def tenant(name: str, **budgets: float) -> TenantConfig:
    return TenantConfig(name=name, api_key="k", budgets=Budgets(**budgets))


@pytest.fixture(autouse=True)
def no_pending_counts() -> Any:
    metering._take()
    yield
    metering._take()


# --- cost ------------------------------------------------------------------------------------------------------


def test_cost_is_tokens_times_price_in_nano_dollars() -> None:
    assert metering.cost_nanousd(PRICE, Usage(prompt_tokens=12, completion_tokens=30)) == 12 * 2500 + 30 * 10_000
    assert metering.usd(330_000) == pytest.approx(0.00033)
    cheap = Price(input_per_million_usd=0.0375, output_per_million_usd=0)
    assert metering.cost_nanousd(cheap, Usage(prompt_tokens=3)) == 112  # 112.5 rounds half to even
    assert metering.cost_nanousd(cheap, Usage(prompt_tokens=5)) == 188  # 187.5
    assert metering.cost_nanousd(PRICE, Usage()) == 0
    big = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert metering.usd(metering.cost_nanousd(PRICE, big)) == 12.5


def test_price_is_the_reported_model_when_priced_else_the_partners_own() -> None:
    mini = Price(input_per_million_usd=0.15, output_per_million_usd=0.6)
    p = partner(model="gpt-4o", **{"gpt-4o": PRICE, "gpt-4o-mini": mini})
    assert metering.price_for(p) == PRICE
    assert metering.price_for(p, "gpt-4o-mini") == mini
    assert metering.price_for(p, "gpt-4o-2024-08-06") == PRICE
    assert metering.price_for(partner()) is None
    assert metering.reported_model({"model": "gpt-4o-mini"}) == "gpt-4o-mini"
    assert metering.reported_model({"model": 3}) is None and metering.reported_model(None) is None


def test_money_and_durations_read_well() -> None:
    assert metering.format_usd(0) == "$0"
    assert metering.format_usd(1234.5) == "$1,234.50"
    assert metering.format_usd(0.00005) == "$0.00005"
    assert metering.format_usd(0.000175) == "$0.000175"
    assert spending.span(3 * 3600 + 12 * 60 + 5) == "3h12m"
    assert spending.span(4 * 86400 + 7 * 3600) == "4d7h"
    assert spending.span(12 * 60) == "12m" and spending.span(40) == "40s"


# --- counters --------------------------------------------------------------------------------------------------


def test_counts_survive_a_failed_write() -> None:
    metering.meter_call("t", partner("priced", **{"m": PRICE}), Usage(prompt_tokens=1), day="2025-01-01")
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)

    async def attempt() -> None:
        try:
            await metering.flush_usage(dead)
        finally:
            await dead.aclose()

    with pytest.raises(redis.exceptions.ConnectionError):
        asyncio.run(attempt())
    assert metering._take() == {("t", "2025-01-01", "priced:calls"): 1, ("t", "2025-01-01", "priced:prompt_tokens"): 1,
                                ("t", "2025-01-01", "priced:cost_nanousd"): 2500}


# --- reading and grouping --------------------------------------------------------------------------------------


def test_day_range_is_the_last_n_utc_days_today_included() -> None:
    assert metering.day_range(3, date(2025, 3, 1)) == [date(2025, 2, 27), date(2025, 2, 28), date(2025, 3, 1)]
    assert metering.day_range(1, date(2025, 3, 1)) == [date(2025, 3, 1)]
    with pytest.raises(ValueError, match="days must be 1 to 400"):
        metering.day_range(401, date(2025, 3, 1))


def test_grouping_by_any_combination_of_partner_day_and_month() -> None:
    days = {
        "2025-02-28": {"a": metering.UsageCounts(jobs=1, calls=2, cost_nanousd=100),
                       "b": metering.UsageCounts(calls=1, prompt_tokens=5)},
        "2025-03-01": {"a": metering.UsageCounts(jobs=2, calls=2, completion_tokens=9, cost_nanousd=50)},
    }
    by_partner = metering.group(days, ["partner"])
    assert [(r.partner, r.jobs, r.calls, r.cost_nanousd) for r in by_partner] == [("a", 3, 4, 150), ("b", 0, 1, 0)]
    assert by_partner[0].day is None and by_partner[0].month is None
    by_month_partner = metering.group(days, ["month", "partner"])
    assert [(r.month, r.partner, r.calls) for r in by_month_partner] == [("2025-02", "a", 2), ("2025-02", "b", 1),
                                                                         ("2025-03", "a", 2)]
    by_partner_day = metering.group(days, ["partner", "day"])
    assert [(r.partner, r.day) for r in by_partner_day] == [("a", "2025-02-28"), ("a", "2025-03-01"),
                                                            ("b", "2025-02-28")]
    everything = metering.group(days, [])
    assert len(everything) == 1 and everything[0].calls == 5
    total = metering.total(by_partner)
    assert (total.jobs, total.calls, total.prompt_tokens, total.completion_tokens, total.cost_nanousd) == (3, 5, 5, 9,
                                                                                                           150)
    assert total.model_dump()["cost_usd"] == pytest.approx(150e-9)


def test_group_by_accepts_names_and_refuses_others() -> None:
    assert metering.parse_by("partner, day") == ["partner", "day"]
    assert metering.parse_by("Month,partner,month") == ["month", "partner"]
    assert metering.parse_by("") == []
    with pytest.raises(ValueError, match="cannot group by 'tenant': use any of partner, day, month"):
        metering.parse_by("partner,tenant")


# --- budgets ---------------------------------------------------------------------------------------------------

AT = datetime(2025, 3, 14, 20, 48, tzinfo=UTC)


def test_resets_are_the_next_utc_midnight_and_first_of_month() -> None:
    assert spending.next_reset("daily", AT) == datetime(2025, 3, 15, tzinfo=UTC)
    assert spending.next_reset("monthly", AT) == datetime(2025, 4, 1, tzinfo=UTC)
    assert spending.next_reset("monthly", datetime(2025, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2026, 1, 1,
                                                                                                 tzinfo=UTC)
    assert spending.next_reset("daily", datetime(2025, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_verdicts_ok_warning_exceeded() -> None:
    budgets = Budgets(daily_usd=1, monthly_usd=10, soft_ratio=0.5)
    ok, _ = spending.statuses(budgets, spending.Spend(day_nanousd=400_000_000, month_nanousd=400_000_000), AT)
    assert (ok.period, ok.state, ok.used_ratio) == ("daily", "ok", 0.4)
    daily, monthly = spending.statuses(budgets, spending.Spend(600_000_000, 9_000_000_000), AT)
    assert (daily.state, monthly.state) == ("warning", "warning")
    daily, monthly = spending.statuses(budgets, spending.Spend(1_000_000_000, 9_000_000_000), AT)
    assert (daily.state, daily.spent_usd, daily.budget_usd) == ("exceeded", 1.0, 1.0)
    assert daily.resets_in_s == 3 * 3600 + 12 * 60
    assert spending.statuses(Budgets(), spending.Spend(10**12, 10**12), AT) == []


def test_the_refusal_says_spend_cap_reset_and_what_to_do() -> None:
    daily, monthly = spending.statuses(Budgets(daily_usd=0.00005, monthly_usd=20),
                                       spending.Spend(175_000, 25_000_000_000), AT)
    assert spending.refusal("budgeted", daily) == (
        "tenant 'budgeted' has spent $0.000175 of its daily budget $0.00005; resets at 00:00 UTC (in 3h12m); "
        "raise budgets.daily_usd in the config or wait. Nothing was queued."
    )
    assert spending.refusal("budgeted", monthly).startswith(
        "tenant 'budgeted' has spent $25.00 of its monthly budget $20.00; resets at 2025-04-01 00:00 UTC (in 17d3h); "
        "raise budgets.monthly_usd"
    )


def test_a_tenant_without_budgets_costs_no_redis_call() -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"Redis was used ({name})")

    asyncio.run(spending.check_budget(Untouchable(), tenant("free")))  # type: ignore[arg-type]


def test_spend_collector_reports_spend_and_budget_use() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    config = GatewayConfig.model_validate({
        "partners": {"p": {"adapter": "openai", "base_url": "http://p.example", "model": "m",
                           "prices": {"m": {"input_per_million_usd": 1, "output_per_million_usd": 1}}}},
        "tenants": {"capped": {"api_key": "a", "budgets": {"daily_usd": 2}}, "open": {"api_key": "b"}},
    })
    registry = CollectorRegistry(auto_describe=False)
    registry.register(spending.SpendCollector(config, {"capped": spending.Spend(1_700_000_000, 3_000_000_000)}, AT))
    text = generate_latest(registry).decode()
    assert 'fedgate_tenant_spend_usd{period="daily",tenant="capped"} 1.7' in text
    assert 'fedgate_tenant_spend_usd{period="monthly",tenant="open"} 0.0' in text
    assert 'fedgate_tenant_budget_used_ratio{period="daily",tenant="capped"} 0.85' in text
    assert 'fedgate_tenant_budget_over_soft{period="daily",tenant="capped"} 1.0' in text
    assert 'fedgate_tenant_budget_exhausted{period="daily",tenant="capped"} 0.0' in text
    assert 'tenant="open"' not in text.split("fedgate_tenant_budget_usd")[1]


# --- config ----------------------------------------------------------------------------------------------------


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fedgate.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


PARTNERS = """\
partners:
  a:
    adapter: openai
    base_url: http://a.example/v1
    model: m
    fallback: [b]
    prices: {m: {input_per_million_usd: 1, output_per_million_usd: 2}}
  b:
    adapter: openai
    base_url: http://b.example/v1
    model: m
"""


def test_prices_and_budgets_load(tmp_path: Path) -> None:
    path = tmp_path / "fedgate.yaml"
    path.write_text(PARTNERS + "    prices: {m: {input_per_million_usd: 0, output_per_million_usd: 0.5}}\n"
                    "tenants:\n  t:\n    api_key: k\n    budgets: {daily_usd: 2.5}\n")
    config = load_config(path)
    assert config.partners["b"].prices["m"] == Price(input_per_million_usd=0, output_per_million_usd=0.5)
    assert config.tenants["t"].budgets == Budgets(daily_usd=2.5, monthly_usd=None, soft_ratio=0.8)


@pytest.mark.parametrize(
    ("tenants", "extra", "says"),
    [
        ("  t: {api_key: k}\n", "    prices: {m: {input_per_million_usd: -1, output_per_million_usd: 0}}\n",
         "partners.b.prices.m.input_per_million_usd: Input should be greater than or equal to 0"),
        ("  t: {api_key: k}\n", "    prices: {m: {input_per_million_usd: 1}}\n",
         "partners.b.prices.m.output_per_million_usd: Field required"),
        ("  t: {api_key: k}\n", "    prices: {m: {input_per_million_usd: 1, output_per_million_usd: 1, per: 3}}\n",
         "partners.b.prices.m.per: Extra inputs are not permitted"),
        ("  t: {api_key: k}\n", "    prices: {other: {input_per_million_usd: 1, output_per_million_usd: 1}}\n",
         "partners.b.prices has no entry for its model 'm': add one"),
        ("  t: {api_key: k, budgets: {daily_usd: 0}}\n", "",
         "tenants.t.budgets.daily_usd: Input should be greater than 0"),
        ("  t: {api_key: k, budgets: {monthly_usd: 5, soft_ratio: 1.5}}\n", "",
         "tenants.t.budgets.soft_ratio: Input should be less than or equal to 1"),
        ("  t: {api_key: k, partners: [a], budgets: {daily_usd: 5}}\n", "",
         "tenants.t.budgets: partner 'b' can serve this tenant but has no prices, so its spend would not count: "
         "add partners.b.prices"),
    ],
)
def test_bad_prices_and_budgets_are_one_line_naming_the_field(tmp_path: Path, tenants: str, extra: str,
                                                              says: str) -> None:
    text = PARTNERS + extra + "tenants:\n" + tenants
    assert says in config_error(tmp_path, text)
