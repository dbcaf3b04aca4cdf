"""Redaction of PII before a partner sees it, per partner policy, with reversible numbered placeholders.

Offline by construction: Presidio's pattern recognizers and python-phonenumbers, no spaCy model download and no
public-suffix-list fetch; NER types only when a spaCy NER model is installed.

Importing this package (or `gateway_core.redaction.policy`, which the config loader does) loads only the policy
model: Presidio, spaCy and phonenumbers are imported when a Redactor is built or a policy is checked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gateway_core.redaction.errors import PolicyNotSupportedError, RedactionError
from gateway_core.redaction.mapping import PlaceholderMap
from gateway_core.redaction.policy import DEFAULT_ENTITIES, CustomRecognizer, RedactionPolicy

if TYPE_CHECKING:
    from gateway_core.redaction.detect import check_policy_supported, supported_entity_types
    from gateway_core.redaction.ner import ner_available
    from gateway_core.redaction.redactor import DetectedEntity, RedactionResult, Redactor

# Names whose modules pull in Presidio, spaCy or phonenumbers: imported on first use.
_LAZY: dict[str, str] = {
    "check_policy_supported": "gateway_core.redaction.detect",
    "supported_entity_types": "gateway_core.redaction.detect",
    "ner_available": "gateway_core.redaction.ner",
    "DetectedEntity": "gateway_core.redaction.redactor",
    "RedactionResult": "gateway_core.redaction.redactor",
    "Redactor": "gateway_core.redaction.redactor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_ENTITIES",
    "CustomRecognizer",
    "DetectedEntity",
    "PlaceholderMap",
    "PolicyNotSupportedError",
    "RedactionError",
    "RedactionPolicy",
    "RedactionResult",
    "Redactor",
    "check_policy_supported",
    "ner_available",
    "supported_entity_types",
]
