"""`GET /metrics` (Prometheus text format, no auth) and `GET /v1/admin/status` (the fleet state, admin key).

/metrics holds this API process's own metrics (prometheus_client's default registry, or every process's files
under PROMETHEUS_MULTIPROC_DIR) plus the fleet-wide gauges read from Redis at scrape time
(`gateway_core.fleet.fleet_state`): queue depth per partner and lane, delayed and in-flight jobs, dead letters, bucket
levels, breaker state and error rate. Workers serve their own counters and histograms on their own port
(`gateway_core.fleet.metrics.start_worker_metrics_server`). Labels carry names only, never request content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway_api.deps import services, tenant
from gateway_core.config import TenantConfig
from gateway_core.errors import RequestError
from gateway_core.fleet.fleet_state import FleetState, read_fleet_state
from gateway_core.fleet.metrics import label, process_registry
from gateway_core.partners.breaker import BreakerState
from gateway_core.tenants.spending import spend_collector

log = logging.getLogger("fedgate.metrics")


class FleetStateCollector(Collector):
    """Gauges for one FleetState (read just before the scrape), or fedgate_fleet_state_up 0 when Redis failed."""

    def __init__(self, state: FleetState | None, read_seconds: float) -> None:
        self.state = state
        self.read_seconds = read_seconds

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("fedgate_fleet_state_up", "1 when the fleet state could be read from Redis")
        up.add_metric([], 1.0 if self.state is not None else 0.0)
        yield up
        took = GaugeMetricFamily("fedgate_fleet_state_read_seconds", "Time to read the fleet state for this scrape")
        took.add_metric([], self.read_seconds)
        yield took
        if self.state is not None:
            yield from _families(self.state)


def _gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric([label(v) for v in values], value)
    return family


def _families(state: FleetState) -> Iterator[Metric]:
    ps = state.partners
    yield _gauge("fedgate_queue_depth", "Jobs waiting on a partner's Celery queue, by lane", ["partner", "lane"],
                 (([p.name, lane], n) for p in ps for lane, n in p.queue_lanes.items()))
    yield _gauge("fedgate_delayed_jobs", "Jobs in the delay queue for a partner (retries, budget waits, fallbacks)",
                 ["partner"], (([p.name], p.delayed) for p in ps))
    yield _gauge("fedgate_in_flight_jobs", "Jobs delivered to a worker and not yet acknowledged", ["partner"],
                 (([p.name], p.in_flight) for p in ps))
    yield _gauge("fedgate_unacked_messages", "All unacknowledged broker deliveries (any queue)", [],
                 [([], state.unacked)])
    yield _gauge("fedgate_delay_queue_size", "All entries of the delay queue", [], [([], state.delayed)])
    yield _gauge("fedgate_dead_letter_queue_size", "All dead letters", [], [([], state.dead_letters)])
    yield _gauge("fedgate_dead_letters", "Dead letters by the partner the job was submitted for", ["partner"],
                 (([p.name], p.dead_letters) for p in ps))
    yield _gauge("fedgate_bucket_level", "Budget bucket level now (negative: reserved ahead by waiting jobs)",
                 ["partner", "bucket"], (([p.name, k], b.level) for p in ps for k, b in p.buckets.items()))
    yield _gauge("fedgate_bucket_capacity", "Budget bucket capacity", ["partner", "bucket"],
                 (([p.name, k], b.capacity) for p in ps for k, b in p.buckets.items()))
    yield _gauge("fedgate_bucket_fill_ratio", "Budget bucket level over capacity (1 full, below 0 in debt)",
                 ["partner", "bucket"], (([p.name, k], b.fill) for p in ps for k, b in p.buckets.items()))
    yield _gauge("fedgate_bucket_wait_seconds", "Seconds until a new reservation in the bucket would be covered",
                 ["partner", "bucket"], (([p.name, k], b.wait_s) for p in ps for k, b in p.buckets.items()))
    yield _gauge("fedgate_breaker_state", "Circuit breaker state: 1 for the current state, 0 for the others",
                 ["partner", "state"],
                 (([p.name, s.value], 1.0 if p.breaker.state is s else 0.0) for p in ps for s in BreakerState))
    yield _gauge("fedgate_breaker_window_calls", "Calls counted in the breaker's sliding window", ["partner"],
                 (([p.name], p.breaker.calls) for p in ps))
    yield _gauge("fedgate_breaker_window_failures", "Failed (retryable) calls in the breaker's sliding window",
                 ["partner"], (([p.name], p.breaker.failures) for p in ps))
    yield _gauge("fedgate_partner_error_rate", "Failure rate over the breaker's window (absent without calls)",
                 ["partner"], (([p.name], p.breaker.error_rate) for p in ps if p.breaker.error_rate is not None))
    yield _gauge("fedgate_fleet_state_truncated", "1 when a count stopped at the scan cap", ["count"],
                 (([name], 1.0) for name in state.truncated))


async def metrics(request: Request) -> Response:
    svc = services(request)
    started = time.perf_counter()
    state: FleetState | None
    try:
        state = await read_fleet_state(svc.redis, svc.config)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("metrics: could not read the fleet state from Redis (%s)", exc.__class__.__name__)
        state = None
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(FleetStateCollector(state, round(time.perf_counter() - started, 6)))
    fleet.register(await spend_collector(svc.redis, svc.config))
    body = generate_latest(process_registry()) + generate_latest(fleet)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def admin(who: Annotated[TenantConfig, Depends(tenant)]) -> TenantConfig:
    if not who.admin:
        raise RequestError(
            403,
            f"tenant {who.name!r} is not an operator: the fleet status needs an admin tenant's API key "
            "(a tenant with 'admin: true' in the config)",
            "admin_required",
        )
    return who


router = APIRouter(prefix="/v1/admin", tags=["operations"], dependencies=[Depends(admin)])


@router.get("/status", response_model=FleetState,
            summary="Per partner: queue depth, delayed, in flight, buckets, breaker, error rate, dead letters")
async def fleet_status(request: Request) -> FleetState:
    svc = services(request)
    return await read_fleet_state(svc.redis, svc.config)


def install(app: FastAPI) -> None:
    """Add /metrics and /v1/admin/status to the app (called from create_app)."""
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.include_router(router)
