"""Where webhook deliveries live in Redis, and the queue and task their attempts travel on (no imports: the CLI and
the API read these without loading the delivery code)."""

from __future__ import annotations

DELAYED_KEY = "fg:webhooks:delayed"  # members "delivery_id:attempt", score = due time in ms (Redis TIME)
DEAD_LETTER_KEY = "fg:webhooks:dlq"  # members delivery_id, score = when it was dead-lettered (ms)
WEBHOOK_QUEUE = "webhooks"  # consumed by the webhook workers only (`fedgate webhook-worker`), never a partner worker
DELIVER_TASK = "fedgate.deliver_webhook"


def delivery_key(delivery_id: str) -> str:
    """The hash holding one delivery (url, tenant, message id, retry settings, the encrypted event body)."""
    return f"fg:webhook:{delivery_id}"


def in_flight_key(tenant: str) -> str:
    """A tenant's deliveries in flight across the fleet: sorted set of "delivery_id:attempt", score = when the slot's
    lease runs out (ms), so a worker that dies holding a slot cannot keep it."""
    return f"fg:webhooks:inflight:{tenant}"


def parked_key(tenant: str) -> str:
    """A tenant's deliveries waiting for a slot: sorted set of "delivery_id:attempt", score = when parked (ms); a
    freed slot moves the oldest to the delay queue, due at once."""
    return f"fg:webhooks:parked:{tenant}"
