"""Where webhook deliveries live in Redis, and the queue and task their attempts travel on (no imports: the CLI and
the API read these without loading the delivery code)."""

from __future__ import annotations

DELAYED_KEY = "fg:webhooks:delayed"  # members "delivery_id:attempt", score = due time in ms (Redis TIME)
DEAD_LETTER_KEY = "fg:webhooks:dlq"  # members delivery_id, score = when it was dead-lettered (ms)
WEBHOOK_QUEUE = "webhooks"
DELIVER_TASK = "fedgate.deliver_webhook"


def delivery_key(delivery_id: str) -> str:
    """The hash holding one delivery (url, tenant, message id, retry settings, the encrypted event body)."""
    return f"fg:webhook:{delivery_id}"
