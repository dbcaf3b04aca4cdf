"""Redaction of PII before a partner sees it, per partner policy, with reversible numbered placeholders.

Offline by construction: Presidio's pattern recognizers and python-phonenumbers, no spaCy model download and no
public-suffix-list fetch; NER types only when a spaCy NER model is installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gateway_core.redaction.errors import PolicyNotSupportedError, RedactionError
from gateway_core.redaction.mapping import PlaceholderMap
from gateway_core.redaction.ner import ner_available
from gateway_core.redaction.policy import DEFAULT_ENTITIES, CustomRecognizer, RedactionPolicy

if TYPE_CHECKING:
    from gateway_core.redaction.detect import check_policy_supported, supported_entity_types
    from gateway_core.redaction.redactor import DetectedEntity, RedactionResult, Redactor

# The detection engine loads presidio (and spaCy) when one of these is first used, not with the package: the config
# module imports the policy model for every `fedgate` command (tests/unit/test_startup.py).
_ENGINE = {"check_policy_supported": "detect", "supported_entity_types": "detect", "DetectedEntity": "redactor",
           "RedactionResult": "redactor", "Redactor": "redactor"}


def __getattr__(name: str) -> Any:
    if name not in _ENGINE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_ENGINE[name]}"), name)
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
