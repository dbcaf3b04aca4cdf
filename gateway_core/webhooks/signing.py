"""Signed webhooks (the Standard Webhooks spec): secrets, signing, verification, SSRF checks, retry decisions.

A delivery is a POST of a JSON event with three headers:

- `webhook-id`: the message id, the same on every retry (receivers deduplicate on it);
- `webhook-timestamp`: integer seconds when this attempt was signed;
- `webhook-signature`: `v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>`, one per live secret,
  space-separated, newest first, so a receiver holding either the old or the new secret verifies during rotation.

Secrets look like `whsec_<base64 key>`. Importable without Redis or Celery: the Python client uses `verify`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import random
import secrets as _secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from gateway_core.errors import FedgateError
from gateway_core.jobs.backoff import backoff_delay, parse_retry_after
from gateway_core.jobs.models import JobStatus, JobView

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300

# Redis keys (kept here so the CLI and API can read them without importing workers).
DELAYED_KEY = "fg:webhooks:delayed"  # members "delivery_id:attempt", score = due time in ms (Redis TIME)
DEAD_LETTER_KEY = "fg:webhooks:dlq"  # members delivery_id, score = when it was dead-lettered (ms)
WEBHOOK_QUEUE = "webhooks"
DELIVER_TASK = "fedgate.deliver_webhook"


def delivery_key(delivery_id: str) -> str:
    return f"fg:webhook:{delivery_id}"


class WebhookError(FedgateError):
    pass


class WebhookSecretError(WebhookError):
    """A secret is not a `whsec_<base64>` string."""


class WebhookVerificationError(WebhookError):
    """A received webhook does not carry a valid, fresh signature."""


class WebhookDestinationRefused(WebhookError):
    """The destination URL is not allowed (scheme, or an address it resolves to; SSRF protection)."""


class WebhookDestinationUnresolved(WebhookError):
    """The destination's host name does not resolve right now (possibly transient: retry)."""


# --- secrets -------------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key bytes of a `whsec_...` secret (the prefix is optional, as in the reference libraries)."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookSecretError("webhook secret must be 'whsec_' followed by base64 (make one with new_secret())") \
            from exc
    if not key:
        raise WebhookSecretError("webhook secret is empty: make one with gateway_core.webhooks.new_secret()")
    return key


def load_or_create_secret(path: Path) -> str:
    """The secret stored in `path`, creating it (mode 0600, written atomically) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(new_secret() + "\n")
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # a process starting alongside never reads a half-written secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def tenant_secrets(tenant: Any, home: Path | None = None) -> list[str]:
    """A tenant's signing secrets, newest first: `webhook_secrets`, then the one in `webhook_secret_file`.

    Read with getattr so this works with any tenant object; a relative file path is relative to `home`.
    """
    found = [s for s in (getattr(tenant, "webhook_secrets", None) or []) if s]
    secret_file = getattr(tenant, "webhook_secret_file", None)
    if secret_file:
        path = Path(secret_file)
        if not path.is_absolute() and home is not None:
            path = home / path
        if path.is_file():
            value = path.read_text().strip()
            if value and value not in found:
                found.append(value)
    return found


# --- signing and verification --------------------------------------------------------------------------------


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<sig>` per secret (newest first), space-separated."""
    if not secrets:
        raise WebhookSecretError("no webhook secret to sign with: give the tenant a webhook secret")
    if not msg_id or any(c in msg_id for c in ". \r\n"):
        raise ValueError("webhook message id must be non-empty without '.', spaces or newlines")
    seen: list[bytes] = []
    for secret in secrets:
        key = secret_key(secret)
        if key not in seen:
            seen.append(key)
    return " ".join(f"{SIGNATURE_VERSION},{_signature(key, msg_id, int(timestamp), body)}" for key in seen)


def signed_headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> None:
    """Check a received webhook; raise WebhookVerificationError saying what is wrong.

    `headers` may use any case; `body` must be the raw request body, exactly as received.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lowered.get(h)]
    if missing:
        raise WebhookVerificationError(f"missing webhook header(s): {', '.join(missing)}")
    msg_id, raw_ts, raw_sigs = lowered["webhook-id"], lowered["webhook-timestamp"], lowered["webhook-signature"]
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp {raw_ts[:20]!r} is not integer seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is {current - timestamp:+.0f}s from now, outside the {tolerance_s:g}s tolerance "
            "(a replayed message, or a clock out of sync)"
        )
    try:
        key = secret_key(secret)
    except WebhookSecretError as exc:
        raise WebhookVerificationError(str(exc)) from None
    payload = body.encode() if isinstance(body, str) else body
    expected = _signature(key, msg_id, timestamp, payload).encode()
    for entry in raw_sigs.split():
        version, _, value = entry.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(expected, value.encode()):
            return
    raise WebhookVerificationError(
        "no webhook signature matches this secret and body (wrong secret, or the body was changed: verify the raw "
        "bytes, not re-serialised JSON)"
    )


# --- SSRF: where deliveries may go ---------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_allow(allow: Iterable[str]) -> tuple[list[IPNetwork], set[str]]:
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in allow:
        item = entry.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item.lower().rstrip("."))
    return networks, hosts


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forbidden_kind(address: IPAddress) -> str | None:
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),  # e.g. 100.64.0.0/10 (carrier-grade NAT, some cloud metadata)
    )
    return next((kind for kind, hit in checks if hit), None)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookDestinationUnresolved(f"webhook host {host!r} does not resolve ({exc})") from None
    addresses: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addr = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 scope id
            if addr not in addresses:
                addresses.append(addr)
    if not addresses:
        raise WebhookDestinationUnresolved(f"webhook host {host!r} resolves to no IPv4 or IPv6 address")
    return addresses


def resolve_destination(url: str, allow: Iterable[str] = ()) -> list[str]:
    """Vet a webhook URL; return the addresses to connect to ([] when the host name itself is allow-listed).

    Refused (WebhookDestinationRefused): anything but http(s), and a host any of whose addresses is private,
    loopback, link-local, reserved, multicast, unspecified or otherwise non-public, unless that address is
    inside an allow-listed CIDR or the host name is allow-listed. Connecting to the returned addresses (not
    resolving again) keeps a DNS answer that changes between check and connect from slipping through.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookDestinationRefused(f"webhook URL is malformed ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookDestinationRefused(
            f"webhook URL must start with http:// or https://, not {parts.scheme + '://' if parts.scheme else url!r}"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise WebhookDestinationRefused("webhook URL has no host")
    networks, hosts = _parse_allow(allow)
    if host.lower() in hosts:
        return []
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    candidates = [str(literal)] if literal is not None else _resolve(host, port)
    for candidate in candidates:
        address = _unmapped(ipaddress.ip_address(candidate))
        kind = _forbidden_kind(address)
        if kind is None or any(address.version == net.version and address in net for net in networks):
            continue
        if literal is not None:
            what, remedy = f"{host} is a {kind} address", f"allow-list {address} or a CIDR containing it"
        else:
            what = f"{host} resolves to {address}, a {kind} address"
            remedy = f"allow-list {host}, or {address} or a CIDR containing it"
        raise WebhookDestinationRefused(
            f"webhook destination {what}; fedgate refuses these to prevent SSRF. "
            f"Use a public endpoint, or {remedy} in the webhook allow list (config webhooks.allow)"
        )
    return candidates


def check_destination(url: str, allow: list[str]) -> None:
    """Raise WebhookDestinationRefused (or WebhookDestinationUnresolved) unless `url` may receive webhooks."""
    resolve_destination(url, allow)


# --- delivery settings ---------------------------------------------------------------------------------------


class WebhookSettings(BaseModel):
    """The `webhooks:` section of the config: where deliveries may go and how they retry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[str] = Field(
        default_factory=list,
        description="CIDRs (127.0.0.0/8, ::1/128, 10.1.2.3) or host names that may receive webhooks although "
        "they are private, loopback or link-local (SSRF protection refuses them otherwise)",
    )
    max_attempts: int = Field(default=8, ge=1, le=50, description="Delivery attempts before the dead-letter queue")
    base_delay_s: float = Field(default=5.0, gt=0, description="First backoff ceiling; doubles per attempt")
    max_delay_s: float = Field(default=3600.0, gt=0, description="Backoff ceiling")


# --- the event body ------------------------------------------------------------------------------------------

EventType = Literal["job.succeeded", "job.dead_lettered", "job.cancelled"]
EVENT_FOR_STATUS: dict[JobStatus, EventType] = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.DEAD_LETTERED: "job.dead_lettered",
    JobStatus.CANCELLED: "job.cancelled",
}
# Job fields that must never leave in a webhook (the prompt and anything derived from it).
NEVER_SENT = frozenset({"prompt", "messages", "placeholder_map", "placeholders", "redacted_prompt", "input"})


class WebhookEvent(BaseModel):
    """The JSON body of a delivery: the job as its tenant sees it (output included), never the prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: EventType
    timestamp: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    data: dict[str, Any]

    @field_validator("data")
    @classmethod
    def _no_prompt(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in value.items() if k not in NEVER_SENT}

    @classmethod
    def for_job(cls, view: JobView) -> WebhookEvent:
        event_type = EVENT_FOR_STATUS.get(view.status)
        if event_type is None:
            raise ValueError(f"job {view.id} is {view.status.value}: webhooks are sent for finished jobs only")
        return cls(type=event_type, data=view.model_dump(mode="json"))

    def body(self) -> bytes:
        return self.model_dump_json().encode()


def job_message_id(job_id: str, event_type: str) -> str:
    """A deterministic webhook id for a job's event, so a re-run notify stage sends the same message again."""
    return f"msg_{job_id}_{event_type.replace('.', '_')}"


# --- retry decisions -----------------------------------------------------------------------------------------

RETRY_AFTER_CEILING_S = 3600.0  # a Retry-After is honoured up to an hour; longer waits are capped there


Decision = Literal["done", "retry", "give_up"]


def delivery_decision(
    status_code: int | None,
    retry_after: str | None,
    attempt: int,
    max_attempts: int,
    base_s: float,
    cap_s: float,
    rng: random.Random | None = None,
) -> tuple[Decision, float]:
    """What to do after attempt number `attempt` (1-based) answered `status_code` (None: no answer).

    2xx: done. 410 Gone: give up now. Anything else (429, 502, 504, other 4xx/5xx, timeouts, connection errors):
    retry after a full-jitter exponential backoff, never sooner than Retry-After, until `max_attempts` are spent.
    """
    if status_code is not None and 200 <= status_code < 300:
        return "done", 0.0
    if status_code == 410 or attempt >= max_attempts:
        return "give_up", 0.0
    wait = parse_retry_after(retry_after)
    return "retry", backoff_delay(attempt, base_s, cap_s, None if wait is None else min(wait, RETRY_AFTER_CEILING_S),
                                  rng)
