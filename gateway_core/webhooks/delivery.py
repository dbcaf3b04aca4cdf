"""One webhook delivery attempt: vet the destination, sign, POST, and record what comes next.

`deliver` makes attempt N of a stored delivery (gateway_core.webhooks.queue) and finalises it atomically and only
once (gateway_core/fleet/lua/webhook_finalise.lua): delivered, a retry scheduled in the webhook delay queue, or
dead-lettered. The destination is re-checked against the SSRF rules on every attempt (DNS can change) and the
connection goes to the vetted address. The worker's task around it is workers/webhooks.py.

Two bounds keep one tenant's slow receiver from holding the fleet:
- a total deadline per attempt (`timeout_s`): resolving, connecting, sending and waiting for the answer's status
  line and headers together, so a receiver that drips a byte every few seconds is cut at the deadline (the attempt
  is retried like any failure) rather than kept alive by per-read timeouts;
- a per-tenant cap on attempts in flight across the fleet (`max_in_flight`): a slot in a Redis sorted set with a
  lease (gateway_core/fleet/lua/webhook_slot_take.lua), so a worker that dies holding one cannot keep it. An
  attempt over the cap is parked in the webhook delay queue, not in a worker, and is woken when one of its
  tenant's slots is released (webhook_slot_release.lua), or after a lease's length at the latest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis.asyncio as aioredis

from gateway_core.crypto import PayloadCipher
from gateway_core.fleet.lua import script
from gateway_core.webhooks.destinations import resolve_destination
from gateway_core.webhooks.errors import WebhookDestinationRefused, WebhookDestinationUnresolved, WebhookSecretError
from gateway_core.webhooks.keys import DEAD_LETTER_KEY, DELAYED_KEY, delivery_key, in_flight_key, parked_key
from gateway_core.webhooks.policy import WebhookSettings, delivery_decision
from gateway_core.webhooks.signing import signed_headers

log = logging.getLogger("fedgate.webhooks")

TIMEOUT_S = 10.0  # the default total deadline of one attempt (FEDGATE_WEBHOOK_TIMEOUT_S in a worker)
USER_AGENT = "fedgate-webhooks/1"
# A slot's lease outlasts the attempt's deadline by this much (signing before it, finalising after it); a parked
# attempt comes back after one lease at the latest, even if no slot of its tenant is released.
LEASE_MARGIN_S = 5.0
PARKED_TTL_MS = 24 * 3600 * 1000


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
        return None, None, f"no answer within the {timeout_s:g}s deadline"
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
    max_in_flight: int | None = None,
    rng: random.Random | None = None,
) -> str:
    """Make attempt `attempt` of a delivery and record what comes next; returns a one-line summary.

    Re-checks the destination against SSRF rules first (DNS can change) and connects to the vetted address.
    `timeout_s` is the attempt's total deadline (resolve, connect, send, status line and headers). With
    `max_in_flight`, the attempt first takes one of its tenant's slots, or is parked in the delay queue.
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
    if max_in_flight is None:
        return await _attempt(redis_client, cipher, delivery_id, attempt, raw, allow, secrets_for, http, timeout_s,
                              rng)
    tenant, member = raw["tenant"], f"{delivery_id}:{attempt}"
    taken = await take_slot(redis_client, tenant, member, max_in_flight, timeout_s)
    if taken != 1:
        why = "this attempt is already in flight" if taken < 0 else f"the tenant has {max_in_flight} in flight"
        return f"parked: attempt {attempt} waits in the delay queue ({why})"
    try:
        return await _attempt(redis_client, cipher, delivery_id, attempt, raw, allow, secrets_for, http, timeout_s,
                              rng)
    finally:
        await release_slot(redis_client, tenant, member)


async def _attempt(
    redis_client: aioredis.Redis, cipher: PayloadCipher, delivery_id: str, attempt: int, raw: dict[str, str],
    allow: Sequence[str], secrets_for: Callable[[str], list[str]] | None, http: httpx.AsyncClient | None,
    timeout_s: float, rng: random.Random | None,
) -> str:
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
        async with asyncio.timeout(timeout_s):  # everything on the wire together, not per read
            addresses = await asyncio.to_thread(resolve_destination, url, allow)
            if http is None:
                async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s) as own:
                    status, retry_after, error = await _post(own, url, addresses, body, headers, timeout_s)
            else:
                status, retry_after, error = await _post(http, url, addresses, body, headers, timeout_s)
    except (WebhookDestinationRefused, WebhookSecretError) as exc:
        await _finalise(redis_client, delivery_id, attempt, "give_up", 0, None, str(exc))
        log.warning("webhook %s: not sent, dead-lettered: %s", delivery_id, exc)
        return f"dead-lettered: {exc}"
    except WebhookDestinationUnresolved as exc:
        error = str(exc)
    except TimeoutError:
        status, retry_after, error = None, None, f"no answer within the {timeout_s:g}s deadline"

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


def lease_ms(timeout_s: float) -> int:
    """How long an attempt with this deadline holds its slot unless it releases it sooner."""
    return max(1, round((timeout_s + LEASE_MARGIN_S) * 1000))


async def take_slot(redis_client: aioredis.Redis, tenant: str, member: str, cap: int, timeout_s: float) -> int:
    """1: the attempt `member` holds one of `tenant`'s `cap` slots; 0: parked (all held); -1: parked (this very
    attempt already holds one, a duplicate message)."""
    lease = lease_ms(timeout_s)
    taken = await redis_client.eval(
        script("webhook_slot_take"), 3, in_flight_key(tenant), parked_key(tenant), DELAYED_KEY,
        member, cap, lease, lease, PARKED_TTL_MS,
    )
    return int(taken)


async def release_slot(redis_client: aioredis.Redis, tenant: str, member: str) -> str:
    """Give the slot of attempt `member` back and wake the tenant's longest-parked attempt; the one woken, or ''."""
    woken = await redis_client.eval(
        script("webhook_slot_release"), 3, in_flight_key(tenant), parked_key(tenant), DELAYED_KEY, member,
    )
    return str(woken or "")


async def dead_letter(redis_client: aioredis.Redis, delivery_id: str, attempt: int, error: str) -> str:
    """Give up on a delivery at attempt `attempt` with `error` as the reason (when the attempt itself failed)."""
    await _finalise(redis_client, delivery_id, attempt, "give_up", 0, None, error)
    return f"dead-lettered: {error}"


# --- HTTP clients ----------------------------------------------------------------------------------------------

_http_clients: dict[int, httpx.AsyncClient] = {}


def http_client(max_connections: int) -> httpx.AsyncClient:
    """One client per event loop (clients may not cross loops); redirects are never followed."""
    loop_id = id(asyncio.get_running_loop())
    client = _http_clients.get(loop_id)
    if client is None:
        client = _http_clients[loop_id] = httpx.AsyncClient(
            follow_redirects=False, timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=100),
        )
    return client
