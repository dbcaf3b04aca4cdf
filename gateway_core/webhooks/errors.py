"""What goes wrong with webhooks: a bad secret, a bad signature, a destination refused or not resolvable."""

from __future__ import annotations

from gateway_core.errors import FedgateError


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
