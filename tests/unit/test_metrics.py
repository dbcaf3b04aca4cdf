"""Metrics: the fleet state read from a real redis-server, the record_* calls, the worker's /metrics endpoint.

Keys are seeded under random partner names and job ids, and every test removes what it added; nothing is flushed,
because other tests share the session's server (the shared sets hold other entries: totals are checked as lower
bounds, per-partner numbers exactly)."""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from gateway_api.cli_status import render
from gateway_api.metrics_routes import FleetStateCollector
from gateway_core.config import GatewayConfig
from gateway_core.fleet import keys, metrics
from gateway_core.fleet.embedded_redis import EmbeddedRedis
from gateway_core.fleet.fleet_state import PRIORITY_SEP, UNACKED, FleetState, read_fleet_state
from gateway_core.jobs.models import Usage
from gateway_core.partners.breaker import BreakerState
from tests.helpers import with_redis

T = TypeVar("T")


def run(redis_server: EmbeddedRedis, body: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    return with_redis(redis_server.url, body)


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


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
    """Known values for three random partners; `cleanup` removes exactly what was added."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.limited, self.plain, self.fresh = name("lim"), name("plain"), name("fresh")
        self.config = make_config(self.limited, self.plain, self.fresh)
        self.keys: list[str] = []
        self.delayed: list[str] = []
        self.unacked: list[str] = []
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
        self.keys += [queue, f"{queue}{PRIORITY_SEP}3", keys.partner_queue(plain), keys.partner_queue(lim, keys.BATCH)]

        far = (await self.now() + 3600) * 1000
        self.delayed = [f"job_{secrets.token_hex(6)}|{lim}|2" for _ in range(4)]
        self.delayed.append(f"job_{secrets.token_hex(6)}|{plain}|1")
        await r.zadd(keys.DELAYED, dict.fromkeys(self.delayed, far))

        routed = [keys.partner_queue(lim)] * 2 + [keys.partner_queue(plain)] + ["partner.default"]
        entries = {secrets.token_hex(8): kombu_unacked_value(q) for q in routed}
        self.unacked = list(entries)
        await r.hset(UNACKED, mapping=entries)

        now = await self.now()
        requests, tokens = keys.bucket(lim, "requests"), keys.bucket(lim, "tokens")
        # requests: blocked by a partner 429 for 100 s from now; tokens: idle long enough to be full again
        await r.hset(requests, mapping={"level": "0", "at": repr(now + 100)})
        await r.hset(tokens, mapping={"level": "-30", "at": repr(now - 1000)})
        self.keys += [requests, tokens]

        breaker = keys.breaker(lim)
        second = int(now)
        await r.hset(breaker, mapping={"state": "open", "opened_at": repr(now - 5), "probe_until": "0"})
        await r.hset(breaker + ":slots", mapping={
            f"{second}:ok": 3, f"{second}:fail": 1, f"{second - 1}:fail": 2, f"{second - 100}:fail": 50,
        })
        self.keys += [breaker, breaker + ":slots"]

        for requested in (lim, lim, plain):
            job_id = f"job_{secrets.token_hex(8)}"
            await r.hset(keys.job(job_id), mapping={"requested_partner": requested, "partner": requested,
                                                    "status": "dead_lettered", "tenant": "t"})
            self.keys.append(keys.job(job_id))
            self.dead.append(job_id)
        self.dead.append(f"job_{secrets.token_hex(8)}")  # its record expired
        await r.zadd(keys.DEAD_LETTERS, {job_id: now * 1000 for job_id in self.dead})

        metrics.note_event(lim, "fallback_out", 2)
        metrics.note_event(lim, "retry")
        await metrics.flush_events(r)
        slot = int(now) // metrics.EVENT_SLOT_S
        stale = metrics.event_window_key(lim, slot - metrics.EVENT_SLOTS - 3)
        await r.hset(stale, "fallback_out", 40)  # older than the window: not counted
        self.keys += [stale, *(metrics.event_window_key(lim, s) for s in range(slot - 2, slot + 2))]

    async def cleanup(self) -> None:
        if self.delayed:
            await self.redis.zrem(keys.DELAYED, *self.delayed)
        if self.unacked:
            await self.redis.hdel(UNACKED, *self.unacked)
        if self.dead:
            await self.redis.zrem(keys.DEAD_LETTERS, *self.dead)
        if self.keys:
            await self.redis.delete(*self.keys)


def with_seeded(redis_server: EmbeddedRedis, check: Callable[[Seeded], Awaitable[T]]) -> T:
    async def body(client: aioredis.Redis) -> T:
        seeded = Seeded(client)
        try:
            await seeded.seed()
            return await check(seeded)
        finally:
            await seeded.cleanup()

    return run(redis_server, body)


def test_fleet_state_reports_the_seeded_numbers(redis_server: EmbeddedRedis) -> None:
    async def check(s: Seeded) -> tuple[Seeded, FleetState]:
        return s, await read_fleet_state(s.redis, s.config)

    seeded, state = with_seeded(redis_server, check)
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
    assert state.delayed >= 5 and state.unacked >= 4 and state.dead_letters >= 4
    assert state.dead_letters_unattributed >= 1
    assert state.truncated == []
    assert state.recent_window_s == metrics.EVENT_SLOT_S * metrics.EVENT_SLOTS


def test_counts_stop_at_the_scan_cap_and_say_so(redis_server: EmbeddedRedis) -> None:
    partner = name("big")
    config = make_config(partner, name("x"), name("y"))
    members = [f"job_{i}|{partner}|1" for i in range(1500)]

    async def body(client: aioredis.Redis) -> FleetState:
        await client.zadd(keys.DELAYED, dict.fromkeys(members, 1))
        try:
            return await read_fleet_state(client, config, scan_cap=200)
        finally:
            await client.zrem(keys.DELAYED, *members)

    state = run(redis_server, body)
    assert "delayed" in state.truncated
    assert 200 <= state.partner(partner).delayed < 1500
    assert state.delayed >= 1500  # the total is exact (ZCARD)


def sample(name_: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name_, labels) or 0.0


def test_record_calls_count_by_partner_and_outcome() -> None:
    p = name("rec")
    metrics.record_call(p, "ok", 0.3)
    metrics.record_call(p, "retryable", 2.0)
    metrics.record_job_finished(p, "tenant-a", "succeeded", queue_wait_s=0.02, total_s=1.5)
    metrics.record_retry(p)
    metrics.record_fallback(p, "other-partner")
    metrics.record_redactions(p, {"EMAIL_ADDRESS": 2, "CREDIT_CARD": 1, "IBAN_CODE": 0})
    metrics.record_contract(p, "invoice@3", "repaired")
    metrics.record_tokens(p, Usage(prompt_tokens=12, completion_tokens=30), cost_usd=0.002)
    with metrics.calls_in_flight(p):
        assert sample("fedgate_partner_calls_in_flight", {"partner": p}) == 1
    assert sample("fedgate_partner_calls_in_flight", {"partner": p}) == 0

    assert sample("fedgate_partner_calls_total", {"partner": p, "outcome": "ok"}) == 1
    assert sample("fedgate_partner_calls_total", {"partner": p, "outcome": "retryable"}) == 1
    assert sample("fedgate_partner_call_seconds_count", {"partner": p}) == 2
    assert sample("fedgate_partner_call_seconds_sum", {"partner": p}) == pytest.approx(2.3)
    assert sample("fedgate_jobs_total", {"partner": p, "tenant": "tenant-a", "outcome": "succeeded"}) == 1
    assert sample("fedgate_queue_wait_seconds_count", {"partner": p}) == 1
    assert sample("fedgate_job_seconds_sum", {"partner": p}) == pytest.approx(1.5)
    assert sample("fedgate_retries_total", {"partner": p}) == 1
    assert sample("fedgate_fallbacks_total", {"from_partner": p, "to_partner": "other-partner"}) == 1
    assert sample("fedgate_redactions_total", {"partner": p, "entity_type": "EMAIL_ADDRESS"}) == 2
    assert sample("fedgate_redactions_total", {"partner": p, "entity_type": "CREDIT_CARD"}) == 1
    assert REGISTRY.get_sample_value("fedgate_redactions_total", {"partner": p, "entity_type": "IBAN_CODE"}) is None
    contract = {"partner": p, "contract": "invoice", "result": "repaired"}
    assert sample("fedgate_contract_validations_total", contract) == 1
    assert sample("fedgate_tokens_total", {"partner": p, "kind": "prompt"}) == 12
    assert sample("fedgate_tokens_total", {"partner": p, "kind": "completion"}) == 30
    assert sample("fedgate_cost_usd_total", {"partner": p}) == pytest.approx(0.002)


def test_label_values_are_names_never_content() -> None:
    assert metrics.label("sim-openai") == "sim-openai"
    assert metrics.label("EMAIL_ADDRESS") == "EMAIL_ADDRESS"
    for value in ("jane.roe@example.com", "Bearer sk-abc 123", "x" * 65, "", "line\nbreak", "<PERSON_1>"):
        assert metrics.label(value) == "other"
    p = name("lbl")
    metrics.record_job_finished(p, "my tenant key sk-123", "succeeded", None, 1.0)
    assert sample("fedgate_jobs_total", {"partner": p, "tenant": "other", "outcome": "succeeded"}) == 1
    with pytest.raises(ValueError, match="passed, repaired, failed"):
        metrics.record_contract(p, "invoice", "maybe")


def test_worker_endpoint_takes_the_next_port_when_one_is_busy() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        try:
            port = metrics.start_worker_metrics_server("127.0.0.1", taken, tries=8)
            assert port is not None and taken < port < taken + 8
            assert metrics.start_worker_metrics_server("127.0.0.1", taken) == port  # one endpoint per process
            p = name("srv")
            metrics.record_call(p, "fatal", 0.1)
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        finally:
            metrics.stop_worker_metrics_server()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("fedgate_partner_calls_total", (("outcome", "fatal"), ("partner", p)))] == 1


def test_worker_endpoint_address_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_WORKER_METRICS_PORT", raising=False)
    assert metrics.worker_metrics_address() == ("127.0.0.1", metrics.DEFAULT_WORKER_METRICS_PORT)
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_PORT", "off")
    assert metrics.worker_metrics_address()[1] is None
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_PORT", "0")
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_HOST", "0.0.0.0")
    assert metrics.worker_metrics_address() == ("0.0.0.0", 0)
    monkeypatch.setenv("FEDGATE_WORKER_METRICS_PORT", "nine")
    with pytest.raises(ValueError, match="not a port"):
        metrics.worker_metrics_address()


def test_status_screen_shows_each_partner(redis_server: EmbeddedRedis) -> None:
    async def check(s: Seeded) -> tuple[Seeded, FleetState]:
        return s, await read_fleet_state(s.redis, s.config)

    seeded, state = with_seeded(redis_server, check)
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


def test_scrape_without_redis_says_so_and_still_answers() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetStateCollector(None, 0.002))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["fedgate_fleet_state_up"].samples[0].value == 0
    assert "fedgate_queue_depth" not in families
