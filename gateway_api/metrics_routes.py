"""`GET /metrics` (Prometheus text format, behind its own bearer token) and `GET /v1/admin/status` (the fleet state,
admin key).

/metrics shows every tenant's spend and the fleet's state, so it answers only a scraper that sends
`Authorization: Bearer <token>`: FEDGATE_METRICS_TOKEN, else the file FEDGATE_METRICS_TOKEN_FILE, else
`$FEDGATE_HOME/metrics-token` (created on first start; Prometheus reads it with `credentials_file`). Anything else
gets a 401 in OpenAI's error shape. The Redis reads behind a scrape are shared: one read per FEDGATE_METRICS_CACHE_S
(1 s), whatever the number of scrapes, so scraping cannot be used to load Redis.

/metrics holds this API process's own metrics (prometheus_client's default registry, or every process's files
under PROMETHEUS_MULTIPROC_DIR) plus the fleet-wide gauges read from Redis at scrape time
(`gateway_core.fleet.fleet_state`): queue depth per partner and lane, delayed and in-flight jobs, dead letters, bucket
levels, breaker state and error rate. Workers serve their own counters and histograms on their own port
(`gateway_core.fleet.metrics.start_worker_metrics_server`). Labels carry names only, never request content.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway_api.deps import services, tenant
from gateway_api.openapi import errors
from gateway_core.config import TenantConfig
from gateway_core.errors import ConfigError, RequestError
from gateway_core.fleet.fleet_state import FleetState, read_fleet_state
from gateway_core.fleet.metrics import label, process_registry
from gateway_core.partners.breaker import BreakerState
from gateway_core.settings import Settings
from gateway_core.tenants.spending import spend_collector

log = logging.getLogger("fedgate.metrics")
TOKEN_FILE = "metrics-token"


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


def metrics_token(settings: Settings) -> str:
    """The token /metrics asks for: FEDGATE_METRICS_TOKEN, else the file FEDGATE_METRICS_TOKEN_FILE names, else
    $FEDGATE_HOME/metrics-token, created (0600, random) when it does not exist yet."""
    if settings.metrics_token:
        return settings.metrics_token.strip()
    if settings.metrics_token_file is not None:
        path = settings.metrics_token_file.expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"FEDGATE_METRICS_TOKEN_FILE {path} cannot be read ({exc.strerror}): write the "
                              "/metrics bearer token there, or unset it to use $FEDGATE_HOME/metrics-token") from None
        if not token:
            raise ConfigError(f"FEDGATE_METRICS_TOKEN_FILE {path} is empty: write the /metrics bearer token there")
        return token
    path = settings.home_dir() / TOKEN_FILE
    if not path.exists():
        _create_token_file(path)
    return path.read_text().strip()


def _create_token_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")


@dataclass
class _Scrape:
    """The Redis reads of one scrape, reused by the scrapes that follow within FEDGATE_METRICS_CACHE_S."""

    at: float
    fleet: CollectorRegistry


class MetricsEndpoint:
    def __init__(self, settings: Settings) -> None:
        self.token = metrics_token(settings).encode()
        self.cache_s = settings.metrics_cache_s
        self._last: _Scrape | None = None
        self._lock = asyncio.Lock()  # concurrent scrapes wait for the one read in progress
        self.reads = 0  # fleet reads done (measurement)

    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token)

    async def __call__(self, request: Request) -> Response:
        if not self.authorized(request):
            raise RequestError(
                401, "missing or wrong metrics token: send 'Authorization: Bearer <token>' with the token from "
                "FEDGATE_METRICS_TOKEN, FEDGATE_METRICS_TOKEN_FILE or $FEDGATE_HOME/metrics-token (Prometheus: "
                "authorization.credentials_file)", "invalid_metrics_token")
        fleet = await self._fleet_registry(request)
        own = CollectorRegistry(auto_describe=False)
        own.register(_ReadsCollector(self.reads))
        body = generate_latest(process_registry()) + generate_latest(fleet) + generate_latest(own)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def _fleet_registry(self, request: Request) -> CollectorRegistry:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last.at < self.cache_s:
                return self._last.fleet
            fleet = await _read_fleet(request)
            self.reads += 1
            self._last = _Scrape(time.monotonic(), fleet)
            return fleet


class _ReadsCollector(Collector):
    def __init__(self, reads: int) -> None:
        self.reads = reads

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("fedgate_metrics_fleet_reads", "Fleet state reads from Redis for /metrics scrapes "
                                  "(one per FEDGATE_METRICS_CACHE_S at most)", value=self.reads)


async def _read_fleet(request: Request) -> CollectorRegistry:
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
    return fleet


async def admin(who: Annotated[TenantConfig, Depends(tenant)]) -> TenantConfig:
    if not who.admin:
        raise RequestError(
            403,
            f"tenant {who.name!r} is not an operator: the fleet status needs an admin tenant's API key "
            "(a tenant with 'admin: true' in the config)",
            "admin_required",
        )
    return who


router = APIRouter(prefix="/v1/admin", tags=["operations"], dependencies=[Depends(admin)], responses=errors(403))


@router.get("/status", response_model=FleetState,
            summary="Per partner: queue depth, delayed, in flight, buckets, breaker, error rate, dead letters")
async def fleet_status(request: Request) -> FleetState:
    svc = services(request)
    return await read_fleet_state(svc.redis, svc.config)


def install(app: FastAPI, settings: Settings) -> None:
    """Add /metrics and /v1/admin/status to the app (called from create_app)."""
    endpoint = MetricsEndpoint(settings)
    app.state.metrics_endpoint = endpoint

    async def metrics(request: Request) -> Response:
        return await endpoint(request)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.include_router(router)
