"""Metering: what each partner call cost, and usage counters per tenant, partner and UTC day.

- Cost: the prompt and completion tokens a partner reported for one call, times the partner's price for the model
  (config `prices`: the model the partner reported when it is priced, else the partner's own `model`). Amounts are
  integer nano-dollars (1e-9 USD): a call of a few tokens at cents per million tokens still counts exactly.
- Counters: one Redis hash per tenant and UTC day (`keys.usage(tenant, "YYYY-MM-DD")`) and one per month
  ("YYYY-MM"), fields "partner:counter" for the COUNTERS below, kept USAGE_TTL_S. Every call is counted (repair
  calls and calls that later failed over included); `jobs` counts jobs that finished with that partner last tried.
- Workers count in memory (`note_call`, `note_job`: no Redis round trip on the hot path) and write everything
  counted in one MULTI/EXEC every second (`flush_usage_forever`) and at shutdown (`flush_usage_sync`). A failed
  write keeps the counts for the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, computed_field

from gateway_core.config import PartnerConfig, Price
from gateway_core.fleet import keys
from gateway_core.fleet.metrics import UsageLike
from gateway_core.fleet.periodic import repeat_forever

log = logging.getLogger("fedgate.metering")

COUNTERS = ("jobs", "calls", "prompt_tokens", "completion_tokens", "cost_nanousd")
DIMENSIONS = ("partner", "day", "month")
NANOS_PER_USD = 1_000_000_000
USAGE_TTL_S = 400 * 86_400
MAX_DAYS = 400
FLUSH_INTERVAL_S = 1.0


# --- cost ------------------------------------------------------------------------------------------------------

def price_for(partner: PartnerConfig, model: str | None = None) -> Price | None:
    """The price of `model` when the partner's prices name it, else of the partner's own model; None: unpriced."""
    if model and model in partner.prices:
        return partner.prices[model]
    return partner.prices.get(partner.model)


def cost_nanousd(price: Price, usage: UsageLike) -> int:
    """Tokens times dollars per million tokens, in nano-dollars (exact decimal arithmetic, rounded half to even)."""
    per_million = (Decimal(str(price.input_per_million_usd)) * usage.prompt_tokens
                   + Decimal(str(price.output_per_million_usd)) * usage.completion_tokens)
    return int((per_million * 1000).to_integral_value(ROUND_HALF_EVEN))


def reported_model(raw: Mapping[str, Any] | None) -> str | None:
    model = raw.get("model") if raw else None
    return model if isinstance(model, str) else None


def usd(nanos: int) -> float:
    return round(nanos / NANOS_PER_USD, 9)


def nanos(dollars: float) -> int:
    return int((Decimal(str(dollars)) * NANOS_PER_USD).to_integral_value(ROUND_HALF_EVEN))


def format_usd(dollars: float) -> str:
    """"$1,234.50" from a cent up; smaller amounts with the digits that matter ("$0.000175")."""
    if dollars == 0:
        return "$0"
    if abs(dollars) >= 0.01:
        return f"${dollars:,.2f}"
    return "$" + f"{dollars:.9f}".rstrip("0")


# --- counting in the worker ------------------------------------------------------------------------------------

_pending: Tally[tuple[str, str, str]] = Tally()  # (tenant, day, "partner:counter") -> amount
_pending_lock = threading.Lock()


@lru_cache(maxsize=8)
def _day_name(epoch_day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=epoch_day)).isoformat()


def day_now() -> str:
    return _day_name(int(time.time()) // 86_400)


def meter_call(tenant: str, partner: PartnerConfig, usage: UsageLike, raw: Mapping[str, Any] | None = None,
               day: str | None = None) -> int | None:
    """Count one partner call (any outcome); returns its cost in nano-dollars, None when the partner is unpriced."""
    price = price_for(partner, reported_model(raw))
    cost = cost_nanousd(price, usage) if price is not None else None
    day = day or day_now()
    name = partner.name
    with _pending_lock:
        _pending[(tenant, day, f"{name}:calls")] += 1
        if usage.prompt_tokens > 0:
            _pending[(tenant, day, f"{name}:prompt_tokens")] += usage.prompt_tokens
        if usage.completion_tokens > 0:
            _pending[(tenant, day, f"{name}:completion_tokens")] += usage.completion_tokens
        if cost:
            _pending[(tenant, day, f"{name}:cost_nanousd")] += cost
    return cost


def note_job(tenant: str, partner: str, day: str | None = None) -> None:
    """A job finished (any outcome) with `partner` the last one tried."""
    with _pending_lock:
        _pending[(tenant, day or day_now(), f"{partner}:jobs")] += 1


def _take() -> Tally[tuple[str, str, str]]:
    global _pending
    with _pending_lock:
        batch, _pending = _pending, Tally()
    return batch


def _give_back(batch: Tally[tuple[str, str, str]]) -> None:
    with _pending_lock:
        _pending.update(batch)


def _queue_writes(pipe: Any, batch: Mapping[tuple[str, str, str], int]) -> None:
    touched: set[str] = set()
    for (tenant, day, field), amount in batch.items():
        for period in (day, day[:7]):
            key = keys.usage(tenant, period)
            pipe.hincrby(key, field, amount)
            touched.add(key)
    for key in touched:
        pipe.expire(key, USAGE_TTL_S)


async def flush_usage(client: aioredis.Redis) -> int:
    """Write what was counted in one transaction; on a Redis error it is kept for the next flush."""
    batch = _take()
    if not batch:
        return 0
    try:
        async with client.pipeline(transaction=True) as pipe:
            _queue_writes(pipe, batch)
            await pipe.execute()
    except BaseException:
        _give_back(batch)
        raise
    return len(batch)


def flush_usage_sync(client: redis.Redis) -> int:
    """The same from synchronous code (a worker's shutdown, after its I/O loop stopped)."""
    batch = _take()
    if not batch:
        return 0
    try:
        with client.pipeline(transaction=True) as pipe:
            _queue_writes(pipe, batch)
            pipe.execute()
    except BaseException:
        _give_back(batch)
        raise
    return len(batch)


async def flush_usage_forever(client: aioredis.Redis, interval_s: float = FLUSH_INTERVAL_S) -> None:
    """Run on the worker's I/O loop; a Redis hiccup only delays the counts."""
    await repeat_forever(lambda: flush_usage(client), interval_s,
                         "could not write usage counters; kept for the next flush", log)


# --- reading ---------------------------------------------------------------------------------------------------

class UsageCounts(BaseModel):
    jobs: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanousd: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float:
        return usd(self.cost_nanousd)

    def add(self, other: UsageCounts) -> None:
        for counter in COUNTERS:
            setattr(self, counter, getattr(self, counter) + getattr(other, counter))


class UsageRow(UsageCounts):
    partner: str | None = None
    day: str | None = None
    month: str | None = None


def parse_usage_hash(raw: Mapping[str, str]) -> dict[str, UsageCounts]:
    """partner -> counts, from one day's or month's hash (unknown fields are skipped)."""
    found: dict[str, UsageCounts] = {}
    for field, value in raw.items():
        partner, _, counter = field.rpartition(":")
        if partner and counter in COUNTERS:
            counts = found.setdefault(partner, UsageCounts())
            setattr(counts, counter, getattr(counts, counter) + int(value))
    return found


def spent_nanousd(raw: Mapping[str, str]) -> int:
    return sum(int(v) for f, v in raw.items() if f.endswith(":cost_nanousd"))


def day_range(days: int, today: date) -> list[date]:
    """The last `days` UTC days, today included, oldest first."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1 to {MAX_DAYS} (usage is kept {MAX_DAYS} days), not {days}")
    return [today - timedelta(days=back) for back in range(days - 1, -1, -1)]


async def read_days(client: aioredis.Redis, tenant: str, days: Sequence[date]) -> dict[str, dict[str, UsageCounts]]:
    """day ("YYYY-MM-DD") -> partner -> counts, in one round trip; days without usage are left out."""
    async with client.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(keys.usage(tenant, day.isoformat()))
        replies = await pipe.execute()
    return {d.isoformat(): parse_usage_hash(r) for d, r in zip(days, replies, strict=True) if r}


def parse_by(text: str | Iterable[str]) -> list[str]:
    """"partner,day" -> ["partner", "day"]; raise ValueError naming an unknown dimension."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    by: list[str] = []
    for part in (p.strip().lower() for p in parts):
        if not part:
            continue
        if part not in DIMENSIONS:
            raise ValueError(f"cannot group by {part!r}: use any of {', '.join(DIMENSIONS)}, comma-separated")
        if part not in by:
            by.append(part)
    return by


def group(days: Mapping[str, Mapping[str, UsageCounts]], by: Sequence[str]) -> list[UsageRow]:
    """Sum the counts over everything not in `by`; rows sorted by their `by` values."""
    rows: dict[tuple[str, ...], UsageRow] = {}
    for day, partners in days.items():
        for partner, counts in partners.items():
            values = {"partner": partner, "day": day, "month": day[:7]}
            group_key = tuple(values[d] for d in by)
            row = rows.get(group_key)
            if row is None:
                row = rows[group_key] = UsageRow.model_validate({d: values[d] for d in by})
            row.add(counts)
    return [rows[k] for k in sorted(rows)]


def total(rows: Iterable[UsageCounts]) -> UsageCounts:
    result = UsageCounts()
    for row in rows:
        result.add(row)
    return result


def utc_now() -> datetime:
    return datetime.now(UTC)
