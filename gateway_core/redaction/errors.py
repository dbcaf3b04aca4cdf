"""Redaction errors. Messages name the stage and the cause, never the text being redacted."""

from __future__ import annotations

from gateway_core.errors import FedgateError


class RedactionError(FedgateError):
    """Redaction could not be completed; the caller must not send the payload (fail closed)."""


class PolicyNotSupportedError(RedactionError):
    """The policy asks for something this installation cannot do (e.g. PERSON without a spaCy NER model)."""
