"""The public entry point: Redactor.redact (fail closed) and Redactor.restore."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from gateway_core.redaction.errors import RedactionError
from gateway_core.redaction.mapping import PlaceholderMap
from gateway_core.redaction.policy import RedactionPolicy


@dataclass(frozen=True, slots=True)
class DetectedEntity:
    """One replaced region. `start`/`end` index the INPUT text; `placeholder` is what replaced it there
    ('<EMAIL_ADDRESS_1>', a mask, a hash token, '' when redacted, None when kept)."""

    type: str
    start: int
    end: int
    placeholder: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RedactionResult:
    text: str
    entities: list[DetectedEntity] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # audit: detections per entity type, never values

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "entities": [entity.to_dict() for entity in self.entities]}


class Redactor:
    """Applies one RedactionPolicy. Build once per policy (compiles everything), then call as often as needed;
    safe to share between threads, while a PlaceholderMap belongs to one job."""

    def __init__(self, policy: RedactionPolicy) -> None:
        # Presidio, spaCy and phonenumbers load here, with the first Redactor, not when the package is imported.
        from gateway_core.redaction import anonymize, detect

        self._anonymize = anonymize
        self.policy = policy
        self._engine = detect.DetectionEngine(policy)
        self._restorable = frozenset(
            entity for entity in policy.detected_entity_types() if policy.operator_for(entity) == "placeholder"
        )

    @classmethod
    def for_policy(cls, policy: RedactionPolicy) -> Redactor:
        """A shared Redactor per distinct policy (building one compiles every pattern: reuse it across jobs)."""
        return _cached_redactor(policy.model_dump_json())

    def redact(self, text: str, mapping: PlaceholderMap, *, salt: str = "") -> RedactionResult:
        """Replace every detected entity. Raises RedactionError on any failure: the text must then not be sent."""
        if not self._engine.detectors:
            return RedactionResult(text)
        self._anonymize.check_salt(self.policy, salt)
        try:
            spans = self._engine.detect(text)
        except Exception as exc:
            raise RedactionError(f"PII detection failed ({type(exc).__name__}); the text was not sent") from None
        try:
            replacements = self._anonymize.plan_replacements(text, spans, self.policy.operator_for, mapping, salt)
            redacted = self._anonymize.apply_replacements(text, replacements)
        except Exception as exc:
            raise RedactionError(f"PII anonymization failed ({type(exc).__name__}); the text was not sent") from None
        entities = [DetectedEntity(r.span.entity, r.span.start, r.span.end, r.text) for r in replacements]
        return RedactionResult(redacted, entities, dict(Counter(entity.type for entity in entities)))

    def restore(self, text: str, mapping: PlaceholderMap) -> str:
        """Put the originals back into partner output, for placeholder-operated types when the policy allows it."""
        if not self.policy.restore or not self._restorable:
            return text
        return self._anonymize.restore_placeholders(text, mapping, self._restorable)


@lru_cache(maxsize=64)
def _cached_redactor(policy_json: str) -> Redactor:
    return Redactor(RedactionPolicy.model_validate_json(policy_json))
