"""Webhook delivery: signed POSTs to a tenant's endpoint, retried through a Redis delay set, then dead-lettered.

A delivery lives in the hash `fg:webhook:{delivery_id}` (url, tenant, message id, retry settings, the event body
encrypted with the job store's cipher). Celery messages carry `delivery_id` and `attempt` only, on queue
`webhooks`. Retries wait in the sorted set `fg:webhooks:delayed` (member `delivery_id:attempt`, score due ms by
Redis TIME), which `move_due_webhooks` sends back to the queue when due: no countdown/ETA task ever waits in
worker memory. An attempt is finalised atomically and only once, so a redelivered or duplicated message can
repeat a POST (receivers deduplicate on `webhook-id`, as the spec expects) but never forks the retry schedule.
Exhausted (or refused, or 410 Gone) deliveries land in the sorted set `fg:webhooks:dlq`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
import redis.asyncio as aioredis
from celery import Celery
from celery.exceptions import Reject

from gateway_core.crypto import PayloadCipher
from gateway_core.fleet.lua import script
from gateway_core.webhooks import (
    DEAD_LETTER_KEY,
    DELAYED_KEY,
    DELIVER_TASK,
    WEBHOOK_QUEUE,
    WebhookDestinationRefused,
    WebhookDestinationUnresolved,
    WebhookEvent,
    WebhookSecretError,
    WebhookSettings,
    delivery_decision,
    delivery_key,
    resolve_destination,
    signed_headers,
    tenant_secrets,
)
from workers.bridge import await_
from workers.celery_app import app

log = logging.getLogger("fedgate.webhooks")

TIMEOUT_S = 10.0
USER_AGENT = "fedgate-webhooks/1"
DEFAULT_TTL_S = 7 * 24 * 3600
SAFETY_NET_MS = 30_000  # the first attempt is re-sent by the mover if the producer dies before sending it
LEASE_MS = 30_000
BATCH = 500
MAX_IDLE_S = 0.25
_SEND_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 1}
INFRASTRUCTURE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# A delivery's atomic steps (enqueue, claim due retries, finalise, replay): gateway_core/fleet/lua/webhook_*.lua.


def delivery_id_for(tenant: str, msg_id: str) -> str:
    """Deterministic: enqueueing the same message for the same tenant twice yields one delivery."""
    return "whd_" + hashlib.sha256(f"{tenant}\n{msg_id}".encode()).hexdigest()[:24]


def send_delivery(celery_app: Celery, delivery_id: str, attempt: int) -> None:
    celery_app.send_task(
        DELIVER_TASK,
        kwargs={"delivery_id": delivery_id, "attempt": attempt},
        queue=WEBHOOK_QUEUE,
        task_id=f"{delivery_id}-{attempt}",
        argsrepr="()",
        kwargsrepr=f"{{'delivery_id': '{delivery_id}', 'attempt': {attempt}}}",
        retry=True,
        retry_policy=_SEND_RETRY,
    )


async def enqueue_webhook(
    redis_client: aioredis.Redis,
    cipher: PayloadCipher,
    *,
    tenant: str,
    url: str,
    event: WebhookEvent,
    msg_id: str,
    secrets: Sequence[str] | None = None,
    settings: WebhookSettings | None = None,
    ttl_s: int = DEFAULT_TTL_S,
    celery_app: Celery | None = None,
) -> str:
    """Store a delivery and send its first attempt to queue `webhooks`; returns the delivery id.

    `secrets` (newest first) are stored encrypted and sign every attempt; leave them out to sign with the
    tenant's configured secrets at delivery time (so a rotation applies to retries already scheduled).
    `settings` gives the retry schedule (default: WebhookSettings()). Idempotent per (tenant, msg_id).
    The Redis client must use decode_responses=True.
    """
    policy = settings or WebhookSettings()
    delivery_id = delivery_id_for(tenant, msg_id)
    fields: dict[str, str | int | float] = {
        "state": "pending",
        "tenant": tenant,
        "url": url,
        "msg_id": msg_id,
        "type": event.type,
        "body": cipher.encrypt(event.body().decode()).decode(),
        "next_attempt": 1,
        "first_attempt": 1,
        "attempts": 0,
        "max_attempts": policy.max_attempts,
        "base_delay_s": policy.base_delay_s,
        "max_delay_s": policy.max_delay_s,
    }
    if secrets:
        fields["secrets"] = cipher.encrypt(json.dumps(list(secrets))).decode()
    flat: list[str | int | float] = [item for pair in fields.items() for item in pair]
    member = f"{delivery_id}:1"
    created = await redis_client.eval(
        script("webhook_enqueue"), 2, delivery_key(delivery_id), DELAYED_KEY, ttl_s * 1000, SAFETY_NET_MS, member,
        *flat,
    )
    if not int(created):
        return delivery_id  # already enqueued: its own first attempt (or safety net) is on its way
    try:
        send_delivery(celery_app or app, delivery_id, 1)
    except Exception as exc:  # the safety-net entry sends it once the broker is back
        log.warning("webhook %s: first attempt not sent now (%s); the mover will send it", delivery_id,
                    exc.__class__.__name__)
    else:
        await redis_client.zrem(DELAYED_KEY, member)
    return delivery_id


async def move_due_webhooks(redis_client: aioredis.Redis, celery_app: Celery) -> int:
    """Send every due retry to queue `webhooks`; returns how many were sent.

    Due entries are claimed with a lease (re-scored LEASE_MS ahead) and removed after sending, so a mover that
    dies mid-way leaves them to another; a duplicate send is harmless (see the module docstring).
    """
    due = await redis_client.eval(script("webhook_claim_due"), 1, DELAYED_KEY, BATCH, LEASE_MS)
    for member in due:
        delivery_id, _, attempt = str(member).rpartition(":")
        send_delivery(celery_app, delivery_id, int(attempt))
    if due:
        await redis_client.zrem(DELAYED_KEY, *due)
    return len(due)


async def run_webhook_mover(redis_client: aioredis.Redis, celery_app: Celery) -> None:
    """Run `move_due_webhooks` forever (every worker runs one, next to the job mover)."""
    while True:
        try:
            if not await move_due_webhooks(redis_client, celery_app):
                await asyncio.sleep(MAX_IDLE_S)
        except asyncio.CancelledError:
            raise
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("webhook mover: store unreachable (%s); retrying", exc.__class__.__name__)
            await asyncio.sleep(1)
        except Exception:  # claimed entries stay leased and are never lost
            log.exception("webhook mover failed; retrying")
            await asyncio.sleep(1)


async def replay_webhook(redis_client: aioredis.Redis, delivery_id: str, ttl_s: int = DEFAULT_TTL_S) -> bool:
    """Send a dead-lettered delivery again (same webhook-id, retries counted afresh); False if not replayable."""
    replayed = await redis_client.eval(
        script("webhook_replay"), 3, delivery_key(delivery_id), DELAYED_KEY, DEAD_LETTER_KEY, delivery_id,
        ttl_s * 1000,
    )
    return bool(int(replayed))


SAFE_FIELDS = (
    "state", "tenant", "url", "msg_id", "type", "attempts", "max_attempts", "last_status", "last_error",
    "created_at_ms", "last_attempt_at_ms", "delivered_at_ms", "dead_lettered_at_ms",
)


async def describe_delivery(redis_client: aioredis.Redis, delivery_id: str) -> dict[str, str] | None:
    """A delivery's status for operators and tenants: never the body or the secrets."""
    raw = cast(dict[str, str], await redis_client.hgetall(delivery_key(delivery_id)))
    if not raw:
        return None
    return {"id": delivery_id, **{k: raw[k] for k in SAFE_FIELDS if k in raw}}


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL rewritten to connect to the vetted `address`, with the original Host header and TLS name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    userinfo, _, hostport = parts.netloc.rpartition("@")
    ip_host = f"[{address}]" if ":" in address else address
    netloc = (userinfo + "@" if userinfo else "") + ip_host + (f":{parts.port}" if parts.port else "")
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    # The pool keys connections by (scheme, IP, port), not by TLS name: a kept-alive connection verified for one
    # hostname must never carry a delivery for another hostname on the same address.
    headers = {"host": hostport, "connection": "close"}
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), headers, extensions


async def _post(
    http: httpx.AsyncClient, url: str, addresses: list[str], body: bytes, headers: dict[str, str], timeout_s: float
) -> tuple[int | None, str | None, str]:
    """(status code or None, retry-after header, error text) for one POST; the response body is not read."""
    target, extra_headers, extensions = url, dict[str, str](), dict[str, Any]()
    host = urlsplit(url).hostname or ""
    if addresses and addresses[0] != host:
        target, extra_headers, extensions = _pinned(url, addresses[0])
    all_headers = {"content-type": "application/json", "user-agent": USER_AGENT, **extra_headers, **headers}
    try:
        async with http.stream(
            "POST", target, content=body, headers=all_headers, extensions=extensions, timeout=timeout_s,
            follow_redirects=False,
        ) as response:
            status = response.status_code
            error = "" if 200 <= status < 300 else f"HTTP {status}"
            return status, response.headers.get("retry-after"), error
    except httpx.TimeoutException:
        return None, None, f"no answer within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return None, None, f"connection failed ({exc.__class__.__name__})"


async def _finalise(
    redis_client: aioredis.Redis, delivery_id: str, attempt: int, decision: str, delay_s: float,
    status: int | None, error: str,
) -> bool:
    done = await redis_client.eval(
        script("webhook_finalise"), 3, delivery_key(delivery_id), DELAYED_KEY, DEAD_LETTER_KEY,
        attempt, decision, max(0, round(delay_s * 1000)), "" if status is None else status, error[:300], delivery_id,
    )
    return bool(int(done))


async def deliver(
    redis_client: aioredis.Redis,
    cipher: PayloadCipher,
    delivery_id: str,
    attempt: int,
    *,
    allow: Sequence[str] = (),
    secrets_for: Callable[[str], list[str]] | None = None,
    http: httpx.AsyncClient | None = None,
    timeout_s: float = TIMEOUT_S,
    rng: random.Random | None = None,
) -> str:
    """Make attempt `attempt` of a delivery and record what comes next; returns a one-line summary.

    Re-checks the destination against SSRF rules first (DNS can change) and connects to the vetted address.
    """
    raw = cast(dict[str, str], await redis_client.hgetall(delivery_key(delivery_id)))  # decode_responses=True
    if not raw:
        return "skipped: delivery not found (expired or purged)"
    if raw.get("state") != "pending":
        return f"skipped: already {raw.get('state')}"
    if raw.get("next_attempt") != str(attempt):
        return f"skipped: attempt {attempt} is stale (next is {raw.get('next_attempt')})"
    if "body" not in raw:
        await _finalise(redis_client, delivery_id, attempt, "give_up", 0, None, "event body missing")
        return "dead-lettered: event body missing"

    tenant, url = raw["tenant"], raw["url"]
    secrets = json.loads(cipher.decrypt(raw["secrets"].encode())) if raw.get("secrets") else []
    if not secrets and secrets_for is not None:
        secrets = secrets_for(tenant)
    counted = attempt - int(raw.get("first_attempt") or 1) + 1
    max_attempts = int(raw.get("max_attempts") or WebhookSettings().max_attempts)

    status: int | None = None
    retry_after: str | None = None
    try:
        if not secrets:
            raise WebhookSecretError(f"tenant {tenant!r} has no webhook secret: configure webhook_secrets")
        body = cipher.decrypt(raw["body"].encode()).encode()
        headers = signed_headers(secrets, raw["msg_id"], int(time.time()), body)
        addresses = await asyncio.to_thread(resolve_destination, url, allow)
    except (WebhookDestinationRefused, WebhookSecretError) as exc:
        await _finalise(redis_client, delivery_id, attempt, "give_up", 0, None, str(exc))
        log.warning("webhook %s: not sent, dead-lettered: %s", delivery_id, exc)
        return f"dead-lettered: {exc}"
    except WebhookDestinationUnresolved as exc:
        error = str(exc)
    else:
        if http is None:
            async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s) as own:
                status, retry_after, error = await _post(own, url, addresses, body, headers, timeout_s)
        else:
            status, retry_after, error = await _post(http, url, addresses, body, headers, timeout_s)

    decision, delay_s = delivery_decision(
        status, retry_after, counted, max_attempts, float(raw.get("base_delay_s") or 5.0),
        float(raw.get("max_delay_s") or 3600.0), rng=rng,
    )
    if status == 410:
        error = "HTTP 410 Gone: the endpoint asked for no more deliveries"
    if not await _finalise(redis_client, delivery_id, attempt, decision, delay_s, status, error):
        return f"skipped: attempt {attempt} was finalised elsewhere"
    if decision == "done":
        return f"delivered (HTTP {status}) on attempt {attempt}"
    if decision == "retry":
        return f"attempt {attempt} failed ({error}); retry in {delay_s:.2f}s"
    log.warning("webhook %s dead-lettered after attempt %s: %s", delivery_id, attempt, error)
    return f"dead-lettered after attempt {attempt}: {error}"


# --- inside a worker -----------------------------------------------------------------------------------------

_http_clients: dict[int, httpx.AsyncClient] = {}


def _http_client(max_connections: int) -> httpx.AsyncClient:
    """One client per event loop (clients may not cross loops); redirects are never followed."""
    loop_id = id(asyncio.get_running_loop())
    client = _http_clients.get(loop_id)
    if client is None:
        client = _http_clients[loop_id] = httpx.AsyncClient(
            follow_redirects=False, timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=100),
        )
    return client


def webhook_settings(config: Any) -> WebhookSettings:
    found = getattr(config, "webhooks", None)
    return found if isinstance(found, WebhookSettings) else WebhookSettings()


def allow_list(config: Any, settings: Any = None) -> list[str]:
    """Config `webhooks.allow`, plus FEDGATE_WEBHOOK_ALLOW (comma-separated) for operators and tests."""
    extra = getattr(settings, "webhook_allow", None) or os.environ.get("FEDGATE_WEBHOOK_ALLOW", "")
    return [*webhook_settings(config).allow, *(item.strip() for item in extra.split(",") if item.strip())]


async def deliver_in_worker(delivery_id: str, attempt: int) -> str:
    from workers.runtime import runtime  # the worker's per-loop Redis client, cipher and config

    rt = runtime()
    home = rt.settings.home_dir()

    def secrets_for(tenant: str) -> list[str]:
        return tenant_secrets(rt.config.tenants.get(tenant), home)

    return await deliver(
        rt.redis, rt.store.cipher, delivery_id, attempt,
        allow=allow_list(rt.config, rt.settings), secrets_for=secrets_for,
        http=_http_client(rt.settings.worker_concurrency),
    )


async def _dead_letter_internal_error(delivery_id: str, attempt: int, exc: Exception) -> str:
    from workers.runtime import runtime

    error = f"internal error in the worker ({exc.__class__.__name__})"
    await _finalise(runtime().redis, delivery_id, attempt, "give_up", 0, None, error)
    return f"dead-lettered: {error}"


@app.task(name=DELIVER_TASK, acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: str, attempt: int) -> str:
    try:
        return await_(deliver_in_worker(delivery_id, attempt))
    except INFRASTRUCTURE_ERRORS as exc:
        log.warning("webhook %s attempt %s: store unreachable (%s); requeued", delivery_id, attempt,
                    exc.__class__.__name__)
        raise Reject(exc.__class__.__name__, requeue=True) from None
    except Exception as exc:
        log.exception("webhook %s attempt %s failed inside the worker; dead-lettering it", delivery_id, attempt)
        try:
            return await_(_dead_letter_internal_error(delivery_id, attempt, exc))
        except INFRASTRUCTURE_ERRORS:
            raise Reject("store unreachable while dead-lettering", requeue=True) from None
