"""Signed webhooks (the Standard Webhooks spec): everything about them except the Celery wiring.

- `signing`: secrets (`whsec_...`), signing and verifying (`sign`, `signed_headers`, `verify`);
- `destinations`: SSRF rules, where deliveries may go (`resolve_destination`, `allow_list`);
- `policy`: the config's `webhooks:` section and the retry decision after an attempt (`delivery_decision`);
- `events`: the JSON body of a delivery (`WebhookEvent`), never the prompt;
- `keys`: Redis keys, the queue and the task name;
- `queue`: storing a delivery and sending its first attempt (`enqueue_webhook`; `job_webhook`, a job's delivery that
  the settle and cancel steps store with its final status), replays, and the retry mover on the delay-queue mover;
- `delivery`: one delivery attempt (`deliver`): vet the destination, sign, POST, record what comes next.

This package's root names the light parts (no Redis, no HTTP client): the Python client imports `verify` from here.
The delivery task and the mover's start-up are the workers' (workers/webhooks.py, workers/tasks.py).
"""

from __future__ import annotations

from gateway_core.webhooks.destinations import allow_list, check_destination, resolve_destination
from gateway_core.webhooks.errors import (
    WebhookDestinationRefused,
    WebhookDestinationUnresolved,
    WebhookError,
    WebhookSecretError,
    WebhookVerificationError,
)
from gateway_core.webhooks.events import EVENT_FOR_STATUS, NEVER_SENT, EventType, WebhookEvent, job_message_id
from gateway_core.webhooks.keys import DEAD_LETTER_KEY, DELAYED_KEY, DELIVER_TASK, WEBHOOK_QUEUE, delivery_key
from gateway_core.webhooks.policy import (
    RETRY_AFTER_CEILING_S,
    Decision,
    WebhookSettings,
    delivery_decision,
    webhook_settings,
)
from gateway_core.webhooks.signing import (
    DEFAULT_TOLERANCE_S,
    SECRET_BYTES,
    SECRET_PREFIX,
    SIGNATURE_VERSION,
    load_or_create_secret,
    new_secret,
    secret_key,
    sign,
    signed_headers,
    tenant_secrets,
    verify,
)

__all__ = [
    "DEAD_LETTER_KEY",
    "DEFAULT_TOLERANCE_S",
    "DELAYED_KEY",
    "DELIVER_TASK",
    "EVENT_FOR_STATUS",
    "NEVER_SENT",
    "RETRY_AFTER_CEILING_S",
    "SECRET_BYTES",
    "SECRET_PREFIX",
    "SIGNATURE_VERSION",
    "WEBHOOK_QUEUE",
    "Decision",
    "EventType",
    "WebhookDestinationRefused",
    "WebhookDestinationUnresolved",
    "WebhookError",
    "WebhookEvent",
    "WebhookSecretError",
    "WebhookSettings",
    "WebhookVerificationError",
    "allow_list",
    "check_destination",
    "delivery_decision",
    "delivery_key",
    "job_message_id",
    "load_or_create_secret",
    "new_secret",
    "resolve_destination",
    "secret_key",
    "sign",
    "signed_headers",
    "tenant_secrets",
    "verify",
    "webhook_settings",
]
