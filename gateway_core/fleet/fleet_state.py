"""The fleet's state as Redis holds it: one read shared by the API's /metrics, `/v1/admin/status` and `fedgate status`.

Per partner: jobs waiting on its Celery queue (the list `partner.<name>`, plus kombu's priority sub-queues
`partner.<name>\\x06\\x16<n>`), jobs in the delay queue for it (retries, budget waits, fallbacks), jobs delivered to a
worker and not yet acknowledged (kombu's `unacked` hash), its budget buckets (projected to now), its circuit
breaker and the failure rate over the breaker's window, dead letters (by requested partner), and recent events
(fallbacks, retries, finished jobs) from the workers' one-minute counters (`gateway_core.fleet.metrics`).

The cost of a read is bounded: a few pipelines, a Lua script that counts (never returns) at most about `scan_cap`
entries of the unacked hash and of the delay queue in chunks of a few milliseconds each, and at most `scan_cap`
dead-letter lookups. Counts that hit
the cap are named in `truncated`. Nothing read here, and nothing returned, holds prompt or output text.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field, computed_field
from redis.asyncio.client import Pipeline

from gateway_core.config import GatewayConfig, PartnerConfig
from gateway_core.fleet import keys
from gateway_core.fleet.lua import script
from gateway_core.fleet.metrics import EVENT_SLOT_S, EVENT_SLOTS, event_window_key
from gateway_core.partners.breaker import BreakerState
from gateway_core.partners.ratelimit import bucket_specs

SCAN_CAP = 10_000
UNACKED = "unacked"  # kombu's Redis transport: delivery tag -> JSON [message, exchange, routing_key]
PRIORITY_SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority step
PRIORITY_STEPS = (3, 6, 9)  # kombu's default steps above 0 (0 is the queue itself)

# Counts per queue or partner run server side in chunks: gateway_core/fleet/lua/fleet_count_chunk.lua.
CHUNK = {"unacked": 1000, "delayed": 5000}  # a few milliseconds of Redis time per call


class BucketState(BaseModel):
    level: float = Field(description="Tokens in the bucket now; negative: reserved ahead (jobs waiting in line)")
    capacity: float
    rate_per_s: float
    wait_s: float = Field(description="Seconds until a new reservation would be covered")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fill(self) -> float:
        """Level over capacity: 1 full, 0 empty, below 0 in debt."""
        return round(self.level / self.capacity, 4) if self.capacity else 0.0


class BreakerView(BaseModel):
    enabled: bool
    state: BreakerState
    opened_at: float | None = None
    window_s: int
    calls: int = Field(description="Calls counted in the breaker's window")
    failures: int = Field(description="Failed (retryable) calls in the window")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def error_rate(self) -> float | None:
        return round(self.failures / self.calls, 4) if self.calls else None


class PartnerState(BaseModel):
    name: str
    queue_depth: int = Field(description="Messages waiting on the partner's Celery queue, all lanes")
    queue_lanes: dict[str, int] = Field(description="Per lane: 'interactive' and 'batch'")
    delayed: int = Field(description="Jobs in the delay queues for this partner (retries, budget waits, fallbacks, "
                                     "batch jobs not yet moved to the batch queue)")
    in_flight: int = Field(description="Jobs delivered to a worker and not yet acknowledged")
    buckets: dict[str, BucketState] = Field(description="'requests' and 'tokens' where the config sets a limit")
    breaker: BreakerView
    dead_letters: int = Field(description="Dead letters whose requested partner is this one")
    recent: dict[str, int] = Field(description="Events in the recent window: fallback_out, retry, job_succeeded, ...")


class FleetState(BaseModel):
    at: float = Field(description="Redis server time of the read (unix seconds)")
    partners: list[PartnerState]
    queued: int
    delayed: int = Field(description="All entries of the delay queues (both lanes)")
    unacked: int = Field(description="All unacknowledged deliveries (any queue)")
    dead_letters: int = Field(description="All dead letters")
    dead_letters_unattributed: int = Field(description="Dead letters whose record expired or names no known partner")
    recent_window_s: int
    truncated: list[str] = Field(default_factory=list, description="Counts that stopped at the scan cap")

    def partner(self, name: str) -> PartnerState:
        for state in self.partners:
            if state.name == name:
                return state
        raise KeyError(name)


def lane_queues(partner: str) -> dict[str, list[str]]:
    """Lane name -> the Redis lists holding that lane of a partner's Celery queue (kombu's priority sub-lists of a
    message sent with a priority included)."""
    lanes: dict[str, list[str]] = {}
    for lane in keys.LANES:
        queue = keys.partner_queue(partner, lane)
        lanes[lane] = [queue, *(f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS)]
    return lanes


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(_text(value))
    except ValueError:
        return None


def _pairs(flat: list[Any]) -> dict[str, int]:
    return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


async def _count(client: aioredis.Redis, kind: str, key: str, cap: int) -> tuple[dict[str, int], bool]:
    """Counts per name over at most about `cap` entries; True when the whole key was counted."""
    count_chunk = client.register_script(script("fleet_count_chunk"))
    tally: dict[str, int] = {}
    cursor, seen = "0", 0
    while True:
        flat, counted, cursor = await count_chunk(keys=[key], args=[kind, cursor, min(CHUNK[kind], cap)])
        for name, count in _pairs(flat).items():
            tally[name] = tally.get(name, 0) + count
        seen += int(counted)
        cursor = _text(cursor)
        if cursor == "0":
            return tally, True
        if seen >= cap:
            return tally, False


def _bucket(level_raw: Any, at_raw: Any, rate: float, capacity: float, now: float) -> BucketState:
    """Project a bucket to `now` the way the Lua scripts do: refill since `at`, capped at capacity."""
    level = _float(level_raw)
    at = _float(at_raw)
    if level is None:
        return BucketState(level=capacity, capacity=capacity, rate_per_s=rate, wait_s=0.0)
    at = now if at is None else at
    blocked = 0.0
    if now > at:
        level = min(capacity, level + (now - at) * rate)
    else:
        blocked = at - now
    wait = blocked + max(0.0, -level) / rate
    return BucketState(level=round(level, 3), capacity=capacity, rate_per_s=rate, wait_s=round(wait, 3))


def _breaker(partner: PartnerConfig, raw: list[Any], slots: dict[Any, Any], now: float) -> BreakerView:
    policy = partner.breaker
    state_raw, opened_raw = raw
    state = BreakerState(_text(state_raw)) if state_raw else BreakerState.CLOSED
    calls = failures = 0
    for field, count in slots.items():
        second, _, outcome = _text(field).partition(":")
        try:
            if now - int(second) >= policy.window_s:
                continue
            n = int(count)
        except ValueError:
            continue
        calls += n
        if outcome == "fail":
            failures += n
    opened_at = _float(opened_raw) if state is not BreakerState.CLOSED else None
    return BreakerView(enabled=policy.enabled, state=state, opened_at=opened_at, window_s=policy.window_s,
                       calls=calls, failures=failures)


class _NamedReads:
    """One pipeline whose replies are read by name rather than by position: `reads("name").llen(key)` queues a
    command under a name; after `await reads.run()`, `reads["name"]` is its reply."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._pipe: Pipeline = client.pipeline(transaction=False)
        self._names: dict[Hashable, None] = {}  # in the order queued
        self._replies: dict[Hashable, Any] = {}

    def __call__(self, name: Hashable) -> Pipeline:
        if name in self._names:
            raise ValueError(f"two reads named {name!r}")
        self._names[name] = None
        return self._pipe

    async def run(self) -> None:
        async with self._pipe as pipe:
            self._replies = dict(zip(self._names, await pipe.execute(), strict=True))

    def __getitem__(self, name: Hashable) -> Any:
        return self._replies[name]


async def read_fleet_state(
    redis_client: aioredis.Redis, config: GatewayConfig, *, scan_cap: int = SCAN_CAP
) -> FleetState:
    partners = list(config.partners.values())
    queue_to_partner = {keys.partner_queue(p.name, lane): p.name for p in partners for lane in keys.LANES}

    # 1. Everything that is one command per key, in one round trip.
    first = _NamedReads(redis_client)
    first("time").time()
    first("unacked").hlen(UNACKED)
    first("delayed").zcard(keys.DELAYED)
    first("batch_delayed").zcard(keys.delayed(keys.BATCH))
    first("dead_letters").zcard(keys.DEAD_LETTERS)
    for p in partners:
        for lists in lane_queues(p.name).values():
            for queue in lists:
                first(("queue", queue)).llen(queue)
        for spec in bucket_specs(p):
            if spec is not None:
                first(("bucket", spec.key)).hmget(spec.key, ["level", "at"])
        first(("breaker", p.name)).hmget(keys.breaker(p.name), ["state", "opened_at"])
        first(("breaker_slots", p.name)).hgetall(keys.breaker(p.name) + ":slots")
    await first.run()
    seconds, micros = first["time"]
    now = int(seconds) + int(micros) / 1_000_000
    unacked_total, dlq_total = int(first["unacked"]), int(first["dead_letters"])
    delayed_total = int(first["delayed"]) + int(first["batch_delayed"])

    # 2. Per-partner counts in the unacked hash and the delay queue (server side, in chunks, capped), recent
    #    events, and the newest dead letters with the partner each was submitted for.
    slot_now = int(now) // EVENT_SLOT_S
    slots = range(slot_now - EVENT_SLOTS + 1, slot_now + 1)
    unacked_by_queue, unacked_complete = await _count(redis_client, "unacked", UNACKED, scan_cap)
    delayed_by_partner, delayed_complete = await _count(redis_client, "delayed", keys.DELAYED, scan_cap)
    batch_delayed, batch_delayed_complete = await _count(redis_client, "delayed", keys.delayed(keys.BATCH), scan_cap)
    for name, count in batch_delayed.items():
        delayed_by_partner[name] = delayed_by_partner.get(name, 0) + count
    delayed_complete = delayed_complete and batch_delayed_complete
    second = _NamedReads(redis_client)
    for p in partners:
        for slot in slots:
            second(("events", p.name, slot)).hgetall(event_window_key(p.name, slot))
    second("dead_ids").zrevrange(keys.DEAD_LETTERS, 0, scan_cap - 1)
    await second.run()
    dead_ids = [_text(j) for j in second["dead_ids"]]

    async with redis_client.pipeline(transaction=False) as pipe:
        for job_id in dead_ids:
            pipe.hget(keys.job(job_id), "requested_partner")
        owners = [_text(o) if o is not None else None for o in await pipe.execute()] if dead_ids else []
    dead_by_partner: dict[str, int] = {}
    for owner in owners:
        if owner is not None:
            dead_by_partner[owner] = dead_by_partner.get(owner, 0) + 1

    in_flight: dict[str, int] = {}
    for routing_key, count in unacked_by_queue.items():
        partner_name = queue_to_partner.get(routing_key.split(PRIORITY_SEP, 1)[0])
        if partner_name is not None:
            in_flight[partner_name] = in_flight.get(partner_name, 0) + count

    # 3. Assemble each partner's state from the replies read above.
    states: list[PartnerState] = []
    for p in partners:
        lanes = {lane: sum(int(first[("queue", queue)]) for queue in lists)
                 for lane, lists in lane_queues(p.name).items()}
        buckets: dict[str, BucketState] = {}
        for kind, spec in zip(("requests", "tokens"), bucket_specs(p), strict=True):
            if spec is not None:
                level_raw, at_raw = first[("bucket", spec.key)]
                buckets[kind] = _bucket(level_raw, at_raw, spec.rate_per_s, spec.capacity, now)
        breaker = _breaker(p, first[("breaker", p.name)], first[("breaker_slots", p.name)], now)
        recent: dict[str, int] = {}
        for slot in slots:
            for event, count in second[("events", p.name, slot)].items():
                recent[_text(event)] = recent.get(_text(event), 0) + int(count)
        states.append(PartnerState(
            name=p.name, queue_depth=sum(lanes.values()), queue_lanes=lanes,
            delayed=delayed_by_partner.get(p.name, 0), in_flight=in_flight.get(p.name, 0), buckets=buckets,
            breaker=breaker, dead_letters=dead_by_partner.get(p.name, 0), recent=dict(sorted(recent.items())),
        ))

    truncated = [name for name, complete in (("unacked", unacked_complete), ("delayed", delayed_complete),
                                             ("dead_letters", len(dead_ids) >= dlq_total)) if not complete]
    attributed = sum(dead_by_partner.get(p.name, 0) for p in partners)
    return FleetState(
        at=round(now, 6),
        partners=states,
        queued=sum(s.queue_depth for s in states),
        delayed=delayed_total,
        unacked=unacked_total,
        dead_letters=dlq_total,
        dead_letters_unattributed=max(0, min(dlq_total, len(dead_ids)) - attributed),
        recent_window_s=EVENT_SLOT_S * EVENT_SLOTS,
        truncated=truncated,
    )
