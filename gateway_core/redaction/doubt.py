"""`on_doubt: redact`: long digit runs next to a word that names a card, an account or a phone are redacted.

The other detectors need evidence that a number is of their type: a valid checksum, a known issuer range, a phone
layout. A number without it can still be one ("my card 4111 1111 1111 1112" with a typo, "acct 0012345678", "call
0201 555 77"), and a policy that prefers over-redaction to a leak says so with `on_doubt: redact`. Then any run of
at least MIN_DIGITS digits (separators allowed) among the few words around such a word is replaced, as the type that
word names: the nearest one wins, and only types the policy detects count.

Never in doubt: dates, decimals, thousands ("1,250,000 points"), and numbers glued to letters ("ORD-2024-0045").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import regex

from gateway_core.redaction.number_layout import is_date, is_decimal, is_thousands, parse_layout
from gateway_core.redaction.policy import CREDIT_CARD, IBAN_CODE, PHONE_NUMBER, US_SSN
from gateway_core.redaction.spans import Candidate, words_around

MIN_DIGITS = 7
DOUBT_SCORE = 1.0

# The words that make a long number doubtful, by the entity type they point to.
DOUBT_WORDS: Mapping[str, tuple[str, ...]] = {
    CREDIT_CARD: ("card", "cc", "visa", "mastercard", "amex", "maestro", "credit", "debit"),
    IBAN_CODE: ("account", "acct", "iban", "bank", "routing", "bic", "swift", "konto", "compte"),
    US_SSN: ("ssn", "social", "itin"),
    PHONE_NUMBER: (
        "phone",
        "tel",
        "telephone",
        "call",
        "fax",
        "mobile",
        "cell",
        "sms",
        "whatsapp",
        "contact",
        "dial",
    ),
}

# Digits with the separators numbers are written with; a label glued in front ("acct#", "tel:") is fine, letters or
# an identifier's dash are not.
_DIGIT_RUN = regex.compile(r"(?<![\w\-.,/])\+?\(?\d[\d \-./()]{5,}\d(?![\w]|[.,]\d)")

_DIGIT = regex.compile(r"\d")
_ENDINGS = ("", "s", "es", "ed", "ing", "er", "ers", "holder", "holders", "number", "no")


class DoubtDetector:
    """Long digit runs near a doubt word, for the policy's types that have doubt words."""

    context: tuple[str, ...] = ()

    def __init__(self, entities: Iterable[str]) -> None:
        wanted = set(entities)
        self._words = [(word, entity) for entity, words in DOUBT_WORDS.items() if entity in wanted for word in words]
        self.entity = ",".join(sorted({entity for _, entity in self._words}))
        self._named = {
            word + ending: entity
            for word, entity in reversed(self._words)
            for ending in (_ENDINGS if len(word) >= 4 else ("",))
        }

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        if not self._words:
            return []
        found: list[Candidate] = []
        for match in _DIGIT_RUN.finditer(text):
            value = match.group()
            if len(_DIGIT.findall(value)) < MIN_DIGITS or _inside(covered, match.start(), match.end()):
                continue
            layout = parse_layout(value)
            if is_date(layout) or is_decimal(layout) or is_thousands(layout):
                continue
            entity = self._named_entity(words_around(text, match.start(), match.end()))
            if entity is not None:
                found.append(Candidate(entity, match.start(), match.end(), DOUBT_SCORE))
        return found

    def _named_entity(self, words: list[str]) -> str | None:
        """The type named by the nearest doubt word, as itself or inflected ("cards", "called", "cardholder");
        short ones only as themselves, and never a longer word that starts the same ("Cardoso", "Bicalho")."""
        for word in words:
            entity = self._named.get(word)
            if entity is not None:
                return entity
        return None


def _inside(covered: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    return any(region_start <= start and end <= region_end for region_start, region_end in covered)
