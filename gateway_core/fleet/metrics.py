"""Prometheus metrics: what each process counts, and the small typed calls the pipeline makes.

Where each number comes from (so nothing is counted twice):
- Counters and histograms (jobs, calls, latencies, retries, fallbacks, redactions, contracts, tokens, cost) live in
  the process that saw the event, in prometheus_client's default registry. A worker is ONE process (the asyncio
  pool; no prefork), so it needs no multiprocess mode: it serves its own `/metrics` from
  `start_worker_metrics_server` (`FEDGATE_WORKER_METRICS_PORT`, default 9700; when several workers share a host,
  the next free port up to +63; `0` picks any free port; `off` disables it; the port taken is logged). Prometheus
  scrapes every worker and sums: `sum by (partner) (rate(fedgate_jobs_total[5m]))`.
- Fleet-wide state that lives in Redis (queue depth per partner and lane, delayed and in-flight jobs, dead letters,
  bucket levels, breaker state and error rate) is NOT a process metric: the API's `/metrics` reads it from Redis at
  scrape time (`gateway_api.metrics_routes`, `gateway_core.fleet.fleet_state`). Every API process reports the same fleet
  values, so scrape one API address (or take max(), never sum across API instances).
- A process that forks (uvicorn `--workers N`, a prefork pool) sets `PROMETHEUS_MULTIPROC_DIR`; the `/metrics`
  endpoints then aggregate with prometheus_client's MultiProcessCollector (`process_registry`).

The status screen (`fedgate status`) also shows recent fallbacks, which no single process knows: the record_*
calls also count a few events per partner into one-minute Redis hashes (`event_window_key`), written in one
pipeline per second by `flush_events_forever`, read back by `fleet_state.read_fleet_state`.

Label values are partner, tenant, outcome, entity type, contract name, result, kind: names from the config or the
code, never request content. `label()` enforces the shape; anything else becomes "other".
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import Counter as Tally
from collections.abc import Mapping
from functools import lru_cache
from typing import Protocol
from wsgiref.simple_server import WSGIServer

import redis.asyncio as aioredis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gateway_core.fleet import keys
from gateway_core.fleet.periodic import repeat_forever

log = logging.getLogger("fedgate.metrics")

# --- label hygiene ---------------------------------------------------------------------------------------------

_LABEL_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
OTHER = "other"


@lru_cache(maxsize=4096)
def label(value: object) -> str:
    """A label value: a name (letters, digits, `_ . : -`, at most 64 characters), else "other".

    Names come from the config and the code; the check keeps a stray value (text, an address, a key) out of the
    time series and bounds their number.
    """
    text = str(value)
    return text if _LABEL_SHAPE.match(text) else OTHER


# --- the metrics -----------------------------------------------------------------------------------------------

CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0, 120.0)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

JOBS_SUBMITTED = Counter(
    "fedgate_jobs_submitted", "Jobs accepted by the API, by requested partner and tenant", ["partner", "tenant"]
)
JOBS = Counter(
    "fedgate_jobs",
    "Jobs finished, by requested partner, tenant and outcome (succeeded, failed, dead_lettered, cancelled)",
    ["partner", "tenant", "outcome"],
)
PARTNER_CALLS = Counter(
    "fedgate_partner_calls", "Calls to a partner, by outcome (ok, retryable, fatal, contract_violation)",
    ["partner", "outcome"],
)
PARTNER_CALL_SECONDS = Histogram(
    "fedgate_partner_call_seconds", "Duration of one partner call (the HTTP round trip)", ["partner"],
    buckets=CALL_BUCKETS,
)
PARTNER_CALLS_IN_FLIGHT = Gauge(
    "fedgate_partner_calls_in_flight", "Partner calls this process is waiting on", ["partner"],
    multiprocess_mode="livesum",
)
WORKER_CALL_SLOTS = Gauge(
    "fedgate_worker_call_slots", "Partner calls worker processes may have in flight (their --concurrency)", [],
    multiprocess_mode="livesum",
)
JOBS_WAITING_FOR_CALL_SLOT = Gauge(
    "fedgate_worker_jobs_waiting_for_call_slot",
    "Jobs claimed and ready to call, waiting for a free call slot: above zero for long, the workers' concurrency "
    "(not the partner) is the limit", ["lane"], multiprocess_mode="livesum",
)
QUEUE_WAIT_SECONDS = Histogram(
    "fedgate_queue_wait_seconds", "From submission to the first worker picking the job up, by requested partner",
    ["partner"], buckets=WAIT_BUCKETS,
)
JOB_SECONDS = Histogram(
    "fedgate_job_seconds", "End to end: from submission to the job's final status, by requested partner",
    ["partner"], buckets=JOB_BUCKETS,
)
RETRIES = Counter("fedgate_retries", "Attempts scheduled again on the same partner after a retryable failure",
                  ["partner"])
FALLBACKS = Counter("fedgate_fallbacks", "Jobs handed from one partner to the next in its fallback chain",
                    ["from_partner", "to_partner"])
BUDGET_WAITS = Counter("fedgate_budget_waits",
                       "Jobs sent to the delay queue to wait for the partner's rate budget", ["partner"])
BREAKER_REJECTIONS = Counter("fedgate_breaker_rejections",
                             "Jobs that skipped a partner because its circuit breaker was open", ["partner"])
REDACTIONS = Counter("fedgate_redactions", "Entities replaced before text went to a partner, by entity type",
                     ["partner", "entity_type"])
CONTRACT_VALIDATIONS = Counter(
    "fedgate_contract_validations", "Output contract checks, by result (passed, repaired, failed)",
    ["partner", "contract", "result"],
)
TOKENS = Counter("fedgate_tokens", "Tokens the partner reported, by kind (prompt, completion)", ["partner", "kind"])
COST = Counter("fedgate_cost_usd", "Spend in US dollars, where a price is known", ["partner"])
CONFIG_RELOADS = Counter("fedgate_config_reloads", "Config reloads on SIGHUP in this API process, by result "
                         "(applied, refused: the previous config is still served)", ["result"])
CONFIG_RELOAD_TIME = Gauge("fedgate_config_last_reload_timestamp_seconds",
                           "Unix time of this API process's last config reload with this result", ["result"],
                           multiprocess_mode="max")

CONTRACT_RESULTS = ("passed", "repaired", "failed")


class UsageLike(Protocol):
    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...


# --- what the pipeline and the API call ------------------------------------------------------------------------

def record_submitted(partner: str, tenant: str) -> None:
    """The API accepted a job (after it is stored and enqueued)."""
    JOBS_SUBMITTED.labels(label(partner), label(tenant)).inc()


def record_call(partner: str, outcome: str, seconds: float) -> None:
    """One partner call finished (any outcome), `seconds` its round trip."""
    p = label(partner)
    PARTNER_CALLS.labels(p, label(outcome)).inc()
    PARTNER_CALL_SECONDS.labels(p).observe(max(0.0, seconds))
    note_event(partner, "call_ok" if outcome == "ok" else "call_failed")


def calls_in_flight(partner: str) -> contextlib.AbstractContextManager[None]:
    """`with metrics.calls_in_flight(name): response = await adapter.call(request)`."""
    return PARTNER_CALLS_IN_FLIGHT.labels(label(partner)).track_inprogress()  # type: ignore[return-value]


def record_job_finished(partner: str, tenant: str, outcome: str, queue_wait_s: float | None, total_s: float) -> None:
    """A job reached its final status. `partner` is the REQUESTED partner (fallbacks show in fedgate_fallbacks)."""
    p = label(partner)
    JOBS.labels(p, label(tenant), label(outcome)).inc()
    if queue_wait_s is not None:
        QUEUE_WAIT_SECONDS.labels(p).observe(max(0.0, queue_wait_s))
    JOB_SECONDS.labels(p).observe(max(0.0, total_s))
    note_event(partner, f"job_{outcome}")


def record_retry(partner: str) -> None:
    RETRIES.labels(label(partner)).inc()
    note_event(partner, "retry")


def record_fallback(src: str, dst: str) -> None:
    FALLBACKS.labels(label(src), label(dst)).inc()
    note_event(src, "fallback_out")
    note_event(dst, "fallback_in")


def record_budget_wait(partner: str) -> None:
    BUDGET_WAITS.labels(label(partner)).inc()


def record_breaker_rejection(partner: str) -> None:
    BREAKER_REJECTIONS.labels(label(partner)).inc()
    note_event(partner, "breaker_rejection")


def record_redactions(partner: str, counts: Mapping[str, int]) -> None:
    """Per entity type, how many values were replaced in the text sent to `partner` (counts only, never values)."""
    p = label(partner)
    for entity_type, count in counts.items():
        if count > 0:
            REDACTIONS.labels(p, label(entity_type)).inc(count)


def record_contract(partner: str, contract: str, result: str) -> None:
    """`contract` is the contract's name (no version); `result` is passed, repaired or failed."""
    if result not in CONTRACT_RESULTS:
        raise ValueError(f"contract result must be one of {', '.join(CONTRACT_RESULTS)}, not {result!r}")
    CONTRACT_VALIDATIONS.labels(label(partner), label(contract.split("@", 1)[0]), result).inc()


def record_tokens(partner: str, usage: UsageLike, cost_usd: float | None = None) -> None:
    """Tokens the partner reported for one call; `cost_usd` where the caller knows the price."""
    p = label(partner)
    if usage.prompt_tokens > 0:
        TOKENS.labels(p, "prompt").inc(usage.prompt_tokens)
    if usage.completion_tokens > 0:
        TOKENS.labels(p, "completion").inc(usage.completion_tokens)
    if cost_usd is not None and cost_usd > 0:
        COST.labels(p).inc(cost_usd)


def record_config_reload(applied: bool) -> None:
    result = "applied" if applied else "refused"
    CONFIG_RELOADS.labels(result).inc()
    CONFIG_RELOAD_TIME.labels(result).set(time.time())


# --- recent events, shared through Redis for `fedgate status` ---------------------------------------------------

EVENT_SLOT_S = 60
EVENT_SLOTS = 5  # the current minute and the four before it
EVENT_KEY_TTL_S = EVENT_SLOT_S * (EVENT_SLOTS + 2)
FLUSH_INTERVAL_S = 1.0
MAX_PENDING = 10_000  # a process that never flushes drops stale counts instead of growing

_pending: Tally[tuple[str, int, str]] = Tally()
_pending_lock = threading.Lock()


def event_window_key(partner: str, slot: int) -> str:
    """One hash per partner and minute (`slot` = epoch seconds // 60): field event -> count. Expires on its own."""
    return f"{keys.PREFIX}:stats:{partner}:{slot}"


def note_event(partner: str, event: str, count: int = 1) -> None:
    """Count an event for the fleet-wide recent window (in memory; `flush_events` writes it)."""
    slot = int(time.time()) // EVENT_SLOT_S
    with _pending_lock:
        _pending[(label(partner), slot, event)] += count
        if len(_pending) > MAX_PENDING:
            for stale in [k for k in _pending if k[1] <= slot - EVENT_SLOTS]:
                del _pending[stale]


async def flush_events(client: aioredis.Redis) -> int:
    """Write the counted events in one pipeline; on a Redis error they are kept for the next flush."""
    global _pending
    with _pending_lock:
        batch, _pending = _pending, Tally()
    if not batch:
        return 0
    try:
        async with client.pipeline(transaction=False) as pipe:
            for (partner, slot, event), count in batch.items():
                key = event_window_key(partner, slot)
                pipe.hincrby(key, event, count)
                pipe.expire(key, EVENT_KEY_TTL_S)
            await pipe.execute()
    except Exception:
        with _pending_lock:
            _pending.update(batch)
        raise
    return len(batch)


async def flush_events_forever(client: aioredis.Redis, interval_s: float = FLUSH_INTERVAL_S) -> None:
    """Run on the worker's I/O loop: flush every `interval_s`; a Redis hiccup only delays the counts."""
    await repeat_forever(lambda: flush_events(client), interval_s,
                         "could not write recent-event counts; kept for the next flush", log)


# --- serving a process's metrics -------------------------------------------------------------------------------

DEFAULT_WORKER_METRICS_PORT = 9700
PORT_TRIES = 64
_server_lock = threading.Lock()
_server: WSGIServer | None = None


def process_registry() -> CollectorRegistry:
    """The registry to expose: the default one, or under PROMETHEUS_MULTIPROC_DIR all processes' files merged."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def worker_metrics_address() -> tuple[str, int | None]:
    """(host, port) from FEDGATE_WORKER_METRICS_HOST / FEDGATE_WORKER_METRICS_PORT; port None when disabled."""
    host = os.environ.get("FEDGATE_WORKER_METRICS_HOST", "127.0.0.1")
    raw = os.environ.get("FEDGATE_WORKER_METRICS_PORT", "").strip().lower()
    if raw in ("off", "none", "false", "no", "-1"):
        return host, None
    if not raw:
        return host, DEFAULT_WORKER_METRICS_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(
            f"FEDGATE_WORKER_METRICS_PORT={raw!r} is not a port: give a number (0 = any free port) or 'off'"
        ) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"FEDGATE_WORKER_METRICS_PORT={port} is out of range (0-65535)")
    return host, port


def start_worker_metrics_server(
    host: str | None = None, port: int | None = None, tries: int = PORT_TRIES
) -> int | None:
    """Serve this process's /metrics; returns the port taken (None when disabled or no port was free).

    Tries `port`, `port + 1`, ... so several workers on one host each get one; the port is logged. Idempotent.
    A worker never fails to start because of its metrics endpoint.
    """
    global _server
    with _server_lock:
        if _server is not None:
            return int(_server.server_port)
        env_host, env_port = worker_metrics_address()
        host = host or env_host
        port = env_port if port is None else port
        if port is None:
            log.info("worker metrics endpoint disabled (FEDGATE_WORKER_METRICS_PORT=off)")
            return None
        candidates = [0] if port == 0 else [p for p in range(port, port + tries) if p <= 65535]
        registry = process_registry()
        for candidate in candidates:
            try:
                server, _ = start_http_server(candidate, addr=host, registry=registry)
            except OSError:
                continue
            _server = server
            log.info("fedgate worker metrics on http://%s:%d/metrics (pid %d)", host, server.server_port,
                     os.getpid())
            return int(server.server_port)
        log.warning("no free port for worker metrics in %d-%d on %s; this worker serves none",
                    candidates[0], candidates[-1], host)
        return None


def stop_worker_metrics_server() -> None:
    """Stop serving (tests; a worker's endpoint simply ends with the process)."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.shutdown()
        server.server_close()
