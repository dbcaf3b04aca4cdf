"""Signing and verifying webhooks (the Standard Webhooks spec), and the secrets they are signed with.

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
import os
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway_core.webhooks.errors import WebhookSecretError, WebhookVerificationError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300


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
