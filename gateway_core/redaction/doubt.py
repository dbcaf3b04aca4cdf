"""`on_doubt: redact`: long numbers next to a word that names a card, an account, a phone or an SSN are redacted.

The other detectors need evidence that a number is of their type: a valid checksum, a known issuer range, a phone
layout. A number without it can still be one ("my card 4111 1111 1111 1112" with a typo, "acct 0012345678", "call
0201 555 77", "social security number ZZ631706T" in another country's format), and a policy that prefers
over-redaction to a leak says so with `on_doubt: redact`. Then, among the few words around such a word, any run of
at least MIN_DIGITS digits (separators allowed), and any identifier of at least MIN_ID_DIGITS digits with a few
letters ("291002A5844", "ZZ631706T"), is replaced as the type that word names: the nearest one wins, and only types
the policy detects count.

Never in doubt: dates, decimals, thousands ("1,250,000 points"), and numbers glued to an identifier's dash
("ORD-2024-0045" is an identifier).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import regex

from gateway_core.redaction.number_layout import is_date, is_decimal, is_thousands, parse_layout
from gateway_core.redaction.policy import CREDIT_CARD, IBAN_CODE, PHONE_NUMBER, US_SSN
from gateway_core.redaction.spans import Candidate, words_around

MIN_DIGITS = 7
MIN_ID_DIGITS = 6
MAX_ID_LETTERS = 3
DOUBT_SCORE = 1.0

# The words that make a long number doubtful, by the entity type they point to.
DOUBT_WORDS: Mapping[str, tuple[str, ...]] = {
    CREDIT_CARD: ("card", "cc", "visa", "mastercard", "amex", "maestro", "credit", "debit"),
    IBAN_CODE: ("account", "acct", "iban", "bank", "routing", "bic", "swift", "konto", "compte"),
    US_SSN: ("ssn", "social", "itin", "sin", "nino", "bsn", "pesel", "insee", "cpf", "personnummer"),
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

# One token of letters and digits (dashes and dots inside), for identifiers such as "291002A5844".
_ID_TOKEN = regex.compile(
    r"(?<![\w\-./])(?=[A-Za-z0-9\-./]*\d)(?=[A-Za-z0-9\-./]*[A-Za-z])"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-./]*[A-Za-z0-9])?(?![\w\-]|[.,]\w)"
)
_DIGIT = regex.compile(r"\d")
_LETTER = regex.compile(r"[A-Za-z]")
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
            self._add_if_named(text, match.start(), match.end(), found)
        for match in _ID_TOKEN.finditer(text):
            value = match.group()
            letters = len(_LETTER.findall(value))
            if not 1 <= letters <= MAX_ID_LETTERS or len(_DIGIT.findall(value)) < MIN_ID_DIGITS:
                continue
            if not _inside(covered, match.start(), match.end()):
                self._add_if_named(text, match.start(), match.end(), found)
        return found

    def _add_if_named(self, text: str, start: int, end: int, found: list[Candidate]) -> None:
        entity = self._named_entity(words_around(text, start, end))
        if entity is not None:
            found.append(Candidate(entity, start, end, DOUBT_SCORE))

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
