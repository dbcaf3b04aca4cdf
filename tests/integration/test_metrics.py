"""The fleet state read from a real redis-server (a database of each test's own): queue depths, delayed and in-flight
jobs, buckets, breakers, dead letters and recent events per partner, the scan cap, and the status screen."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from rich.console import Console

from gateway_api.cli_status import render
from gateway_core.config import GatewayConfig
from gateway_core.fleet import keys, metrics
from gateway_core.fleet.fleet_state import PRIORITY_SEP, UNACKED, FleetState, read_fleet_state
from gateway_core.partners.breaker import BreakerState
from tests.helpers import with_redis
from tests.unit.test_metrics import name

T = TypeVar("T")


def make_config(limited: str, plain: str, fresh: str) -> GatewayConfig:
    def partner(n: str, **extra: Any) -> dict[str, Any]:
        return {"name": n, "adapter": "openai", "base_url": f"http://{n}.example/v1", "model": "m", **extra}

    return GatewayConfig.model_validate({
        "partners": {
            limited: partner(limited, limits={"requests_per_minute": 60, "tokens_per_minute": 6000},
                             breaker={"window_s": 30, "min_calls": 4}),
            plain: partner(plain, breaker={"enabled": False}),
            fresh: partner(fresh, limits={"requests_per_minute": 600}),
        },
        "tenants": {"t": {"name": "t", "api_key": "k"}},
    })


def kombu_unacked_value(queue: str) -> str:
    """What kombu's Redis transport stores per unacked delivery: JSON [message, exchange, routing_key]."""
    message = {
        "body": "W1tdLCB7ImpvYl9pZCI6ICJqb2JfMSJ9XQ==",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "fedgate.run_job", "id": "job_1-1", "kwargsrepr": "{'job_id': 'job_1'}"},
        "properties": {"correlation_id": "job_1-1", "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                       "delivery_info": {"exchange": queue, "routing_key": queue},
                       "delivery_tag": secrets.token_hex(8)},
    }
    return json.dumps([message, queue, queue])


class Seeded:
    """Known values for three partners, seeded into the test's own database."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.limited, self.plain, self.fresh = name("lim"), name("plain"), name("fresh")
        self.config = make_config(self.limited, self.plain, self.fresh)
        self.dead: list[str] = []

    async def now(self) -> float:
        seconds, micros = await self.redis.time()
        return int(seconds) + int(micros) / 1_000_000

    async def seed(self) -> None:
        r, lim, plain = self.redis, self.limited, self.plain
        queue = keys.partner_queue(lim)
        await r.rpush(queue, "m1", "m2", "m3")
        await r.rpush(f"{queue}{PRIORITY_SEP}3", "m4", "m5")
        await r.rpush(keys.partner_queue(plain), "m6")
        await r.rpush(keys.partner_queue(lim, keys.BATCH), "m7")

        far = (await self.now() + 3600) * 1000
        delayed = [f"job_{secrets.token_hex(6)}|{lim}|2" for _ in range(4)]
        delayed.append(f"job_{secrets.token_hex(6)}|{plain}|1")
        await r.zadd(keys.DELAYED, dict.fromkeys(delayed, far))

        routed = [keys.partner_queue(lim)] * 2 + [keys.partner_queue(plain)] + ["partner.default"]
        entries = {secrets.token_hex(8): kombu_unacked_value(q) for q in routed}
        await r.hset(UNACKED, mapping=entries)

        now = await self.now()
        requests, tokens = keys.bucket(lim, "requests"), keys.bucket(lim, "tokens")
        # requests: blocked by a partner 429 for 100 s from now; tokens: idle long enough to be full again
        await r.hset(requests, mapping={"level": "0", "at": repr(now + 100)})
        await r.hset(tokens, mapping={"level": "-30", "at": repr(now - 1000)})

        breaker = keys.breaker(lim)
        second = int(now)
        await r.hset(breaker, mapping={"state": "open", "opened_at": repr(now - 5), "probe_until": "0"})
        await r.hset(breaker + ":slots", mapping={
            f"{second}:ok": 3, f"{second}:fail": 1, f"{second - 1}:fail": 2, f"{second - 100}:fail": 50,
        })

        for requested in (lim, lim, plain):
            job_id = f"job_{secrets.token_hex(8)}"
            await r.hset(keys.job(job_id), mapping={"requested_partner": requested, "partner": requested,
                                                    "status": "dead_lettered", "tenant": "t"})
            self.dead.append(job_id)
        self.dead.append(f"job_{secrets.token_hex(8)}")  # its record expired
        await r.zadd(keys.DEAD_LETTERS, {job_id: now * 1000 for job_id in self.dead})

        metrics.note_event(lim, "fallback_out", 2)
        metrics.note_event(lim, "retry")
        await metrics.flush_events(r)
        slot = int(now) // metrics.EVENT_SLOT_S
        stale = metrics.event_window_key(lim, slot - metrics.EVENT_SLOTS - 3)
        await r.hset(stale, "fallback_out", 40)  # older than the window: not counted

def with_seeded(redis_url: str, check: Callable[[Seeded], Awaitable[T]]) -> T:
    async def body(client: aioredis.Redis) -> T:
        seeded = Seeded(client)
        await seeded.seed()
        return await check(seeded)

    return with_redis(redis_url, body)


def test_fleet_state_reports_the_seeded_numbers(redis_url: str) -> None:
    async def check(s: Seeded) -> tuple[Seeded, FleetState]:
        return s, await read_fleet_state(s.redis, s.config)

    seeded, state = with_seeded(redis_url, check)
    assert [p.name for p in state.partners] == [seeded.limited, seeded.plain, seeded.fresh]
    lim, plain, fresh = (state.partner(n) for n in (seeded.limited, seeded.plain, seeded.fresh))

    assert lim.queue_lanes == {"interactive": 5, "batch": 1}
    assert lim.queue_depth == 6 and plain.queue_depth == 1 and fresh.queue_depth == 0
    assert (lim.delayed, plain.delayed, fresh.delayed) == (4, 1, 0)
    assert (lim.in_flight, plain.in_flight, fresh.in_flight) == (2, 1, 0)
    assert (lim.dead_letters, plain.dead_letters, fresh.dead_letters) == (2, 1, 0)

    requests, tokens = lim.buckets["requests"], lim.buckets["tokens"]
    assert (requests.capacity, requests.rate_per_s, requests.level) == (1.0, 1.0, 0.0)
    assert 95 < requests.wait_s <= 100  # blocked until the 429's Retry-After has passed
    assert (tokens.capacity, tokens.level, tokens.wait_s, tokens.fill) == (50.0, 50.0, 0.0, 1.0)
    assert plain.buckets == {}
    assert fresh.buckets["requests"].level == fresh.buckets["requests"].capacity == 5.0  # never used: full

    assert lim.breaker.state is BreakerState.OPEN and lim.breaker.opened_at is not None
    assert (lim.breaker.calls, lim.breaker.failures, lim.breaker.error_rate) == (6, 3, 0.5)
    assert not plain.breaker.enabled and plain.breaker.error_rate is None
    assert fresh.breaker.state is BreakerState.CLOSED and fresh.breaker.opened_at is None

    assert lim.recent == {"fallback_out": 2, "retry": 1}
    assert plain.recent == {} and fresh.recent == {}

    assert state.queued == 7
    assert (state.delayed, state.unacked, state.dead_letters, state.dead_letters_unattributed) == (5, 4, 4, 1)
    assert state.truncated == []
    assert state.recent_window_s == metrics.EVENT_SLOT_S * metrics.EVENT_SLOTS


def test_counts_stop_at_the_scan_cap_and_say_so(redis_url: str) -> None:
    partner = name("big")
    config = make_config(partner, name("x"), name("y"))
    members = [f"job_{i}|{partner}|1" for i in range(1500)]

    async def body(client: aioredis.Redis) -> FleetState:
        await client.zadd(keys.DELAYED, dict.fromkeys(members, 1))
        return await read_fleet_state(client, config, scan_cap=200)

    state = with_redis(redis_url, body)
    assert "delayed" in state.truncated
    assert 200 <= state.partner(partner).delayed < 1500
    assert state.delayed == 1500  # the total is exact (ZCARD)


def test_status_screen_shows_each_partner(redis_url: str) -> None:
    async def check(s: Seeded) -> tuple[Seeded, FleetState]:
        return s, await read_fleet_state(s.redis, s.config)

    seeded, state = with_seeded(redis_url, check)
    console = Console(width=200, record=True)
    console.print(render(state))
    text = console.export_text()
    for header in ("Partner", "Queue", "Delayed", "In flight", "Requests bucket", "Tokens bucket", "Breaker",
                   "Error rate", "Fallbacks 5m", "Dead letters"):
        assert header in text
    lim_row = next(line for line in text.splitlines() if seeded.limited in line)
    assert "open" in lim_row and "50% of 6" in lim_row and "50.0/50 (100%)" in lim_row and "wait" in lim_row
    plain_row = next(line for line in text.splitlines() if seeded.plain in line)
    assert "disabled" in plain_row and "no limit" in plain_row
