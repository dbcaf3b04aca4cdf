"""Per-partner data policy: which entity types to find and what to do with each (pydantic v2, YAML-friendly)."""

from __future__ import annotations

from typing import Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
IP_ADDRESS = "IP_ADDRESS"
US_SSN = "US_SSN"
CRYPTO = "CRYPTO"
URL = "URL"
PERSON = "PERSON"
LOCATION = "LOCATION"
ORGANIZATION = "ORGANIZATION"

DEFAULT_ENTITIES: tuple[str, ...] = (
    EMAIL_ADDRESS,
    PHONE_NUMBER,
    CREDIT_CARD,
    IBAN_CODE,
    IP_ADDRESS,
    US_SSN,
    CRYPTO,
)

# Presidio's PhoneRecognizer default regions: national-format numbers are looked up in these numbering plans;
# numbers written with a country code (+44..., 0044...) are found whatever the list says.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")

OperatorName = Literal["placeholder", "mask", "hash", "redact", "keep"]
ValidatorName = Literal["luhn", "iban"]
DoubtAction = Literal["keep", "redact"]

# Placeholders are written as <ENTITY_N>, so entity names must stay inside this alphabet for restore() to find them.
ENTITY_NAME_PATTERN = r"^[A-Z][A-Z0-9_]*$"


class CustomRecognizer(BaseModel):
    """A regex recognizer from config, e.g. internal account numbers.

    A match scores `score`; a context word among the few words before the match adds 0.35 (as Presidio does), and
    the match counts when the result reaches the policy's `min_score`. With a validator, a match that fails the
    checksum is dropped and one that passes scores 1.0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    entity: str = Field(pattern=ENTITY_NAME_PATTERN)
    patterns: list[str] = Field(min_length=1)
    context: list[str] = []
    score: float = Field(default=0.6, ge=0.0, le=1.0)
    validator: ValidatorName | None = None
    case_sensitive: bool = False

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"patterns[{index}] is not a valid regular expression: {exc}") from None
        return patterns

    @field_validator("context")
    @classmethod
    def _context_lowercase(cls, words: list[str]) -> list[str]:
        return [word.strip().lower() for word in words if word.strip()]


class RedactionPolicy(BaseModel):
    """What a partner may see. The default redacts the common pattern-detectable PII with numbered placeholders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES))
    operators: dict[str, OperatorName] = {}
    default_operator: OperatorName = "placeholder"
    restore: bool = True
    custom_recognizers: list[CustomRecognizer] = []
    deny_list: dict[str, list[str]] = {}
    retention_s: int | None = Field(default=None, ge=0)
    min_score: float = Field(default=0.4, ge=0.0, le=1.0)
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS))
    # What to do with a number the engine is unsure about (a long digit run near "card", "account", "phone", ...):
    # "redact" replaces it as the type its context words name; "keep" leaves it. A leak is worse than over-redaction.
    on_doubt: DoubtAction = "keep"
    # Images are passed on as they are (never redacted): a partner that must not see them refuses them.
    allow_images: bool = True

    @classmethod
    def disabled(cls) -> RedactionPolicy:
        """For partners that may see everything: detects nothing, changes nothing."""
        return cls(entities=[])

    @field_validator("entities")
    @classmethod
    def _entities_well_formed(cls, entities: list[str]) -> list[str]:
        for entity in entities:
            if not regex.match(ENTITY_NAME_PATTERN, entity):
                raise ValueError(
                    f"entity type {entity!r} must be upper case letters, digits and '_' (e.g. EMAIL_ADDRESS)"
                )
        return list(dict.fromkeys(entities))

    @field_validator("deny_list")
    @classmethod
    def _deny_list_well_formed(cls, deny_list: dict[str, list[str]]) -> dict[str, list[str]]:
        for entity, words in deny_list.items():
            if not regex.match(ENTITY_NAME_PATTERN, entity):
                raise ValueError(f"deny_list key {entity!r} must be an entity type such as CODENAME")
            if not all(word.strip() for word in words):
                raise ValueError(f"deny_list[{entity}] contains an empty entry")
        return deny_list

    @field_validator("phone_regions")
    @classmethod
    def _regions_upper(cls, regions: list[str]) -> list[str]:
        return [region.strip().upper() for region in regions]

    @model_validator(mode="after")
    def _operators_refer_to_detected_types(self) -> RedactionPolicy:
        detected = set(self.detected_entity_types())
        unknown = sorted(set(self.operators) - detected)
        if unknown:
            raise ValueError(
                f"operators are set for {', '.join(unknown)}, which this policy does not detect; "
                "add them to entities (or a custom recognizer / deny_list) or remove the operator"
            )
        return self

    def detected_entity_types(self) -> list[str]:
        """Every entity type this policy looks for: `entities` plus those custom recognizers and deny-lists add."""
        types = list(self.entities)
        types += [recognizer.entity for recognizer in self.custom_recognizers]
        types += list(self.deny_list)
        return list(dict.fromkeys(types))

    def operator_for(self, entity: str) -> OperatorName:
        return self.operators.get(entity, self.default_operator)
