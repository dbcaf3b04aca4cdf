"""Redaction of PII before a partner sees it, per partner policy, with reversible numbered placeholders.

Offline by construction: Presidio's pattern recognizers and python-phonenumbers, no spaCy model download and no
public-suffix-list fetch; NER types only when a spaCy NER model is installed.
"""

from gateway_core.redaction.detect import check_policy_supported, supported_entity_types
from gateway_core.redaction.errors import PolicyNotSupportedError, RedactionError
from gateway_core.redaction.mapping import PlaceholderMap
from gateway_core.redaction.ner import ner_available
from gateway_core.redaction.policy import DEFAULT_ENTITIES, CustomRecognizer, RedactionPolicy
from gateway_core.redaction.redactor import DetectedEntity, RedactionResult, Redactor

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
