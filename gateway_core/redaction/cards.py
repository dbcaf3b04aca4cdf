"""Payment card numbers of every issuer range and length the networks publish, not only those Presidio's pattern knows.

Presidio's card pattern reads 13 to 17 digits starting with 1, 3, 4, 5 or 6 in groups of four; real cards also run
to 19 digits (Visa, UnionPay, Discover, JCB, Maestro), down to 12 (Maestro), start with 2 (Mastercard 2221-2720,
Mir, legacy JCB 2131), 8 or 9 (RuPay, Uzcard, national schemes such as PROSTIR, Humo and Troy), and are written in
the network's own grouping (Amex 4-6-5, Diners 4-6-4, UnionPay 6-13). Here a card is a run of 12-19 digits, plain
or in groups separated by one space, dash or dot, whose prefix and length match a published issuer range and which
passes the Luhn check.

Within a run of digit groups the longest valid card is taken first, so a card is never cut short by a shorter Luhn
match inside it; a number glued to letters ("1Z999AA1...") or labelled as another identifier ("ISBN", "EAN",
"barcode") is not a card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import regex

from gateway_core.redaction.policy import CREDIT_CARD
from gateway_core.redaction.spans import Candidate, preceding_words

MIN_LENGTH = 12
MAX_LENGTH = 19
CARD_SCORE = 1.0  # a Luhn-valid number in a published range: as sure as Presidio's validated card match

# Card-shaped numbers named as something else just before them: EAN-13 and ISBN-13 barcodes are 13 digits and pass
# the Luhn check one time in ten.
NOT_A_CARD_WORDS: frozenset[str] = frozenset({"isbn", "ean", "gtin", "upc", "barcode", "sku", "issn", "doi"})


@dataclass(frozen=True, slots=True)
class IssuerRange:
    low: int
    high: int
    prefix_length: int
    lengths: frozenset[int]

    def matches(self, digits: str) -> bool:
        return len(digits) in self.lengths and self.low <= int(digits[: self.prefix_length]) <= self.high


def _ranges(prefixes: str, lengths: Sequence[int]) -> list[IssuerRange]:
    found = []
    for spec in prefixes.split():
        low, _, high = spec.partition("-")
        found.append(IssuerRange(int(low), int(high or low), len(low), frozenset(lengths)))
    return found


def _span(low: int, high: int) -> tuple[int, ...]:
    return tuple(range(low, high + 1))


# Published issuer identification ranges (ISO/IEC 7812 registrations as the networks document them).
ISSUER_RANGES: tuple[IssuerRange, ...] = tuple(
    issuer_range
    for prefixes, lengths in (
        ("4", _span(13, 19)),  # Visa (13, 16, 19), Visa Electron, Dankort co-brand, Switch
        ("51-55 2221-2720", (16,)),  # Mastercard, Diners Club US & Canada
        ("34 37", (15,)),  # American Express
        ("6011 644-649 65 622126-622925", _span(16, 19)),  # Discover, Troy, RuPay 65
        ("3528-3589", _span(15, 19)),  # JCB
        ("2131 1800", (15,)),  # JCB 15-digit legacy
        ("50 56-69 5018 5020 5038 5893 6304 6759 6761-6763 0604", _span(12, 19)),  # Maestro, Laser, Solo, GPN
        ("62", _span(16, 19)),  # UnionPay
        ("36 38 39 3095", _span(14, 19)),  # Diners Club International
        ("300-305", _span(14, 19)),  # Diners Club Carte Blanche
        ("2200-2205", _span(16, 19)),  # Mir, BORICA
        ("81 82 508 353 356", (16,)),  # RuPay
        ("5019 5614", (16,)),  # Dankort, Uzcard
        ("1", (15,)),  # UATP
        ("8600 9", (16,)),  # Uzcard; national schemes under major industry identifier 9 (PROSTIR, Humo, Troy)
        ("31", (19,)),  # China T-Union
        ("1946", (16, 18, 19)),  # GPN
    )
    for issuer_range in _ranges(prefixes, lengths)
)


def _starts_with(issuer_range: IssuerRange, digit: int) -> bool:
    """Some prefix of the range starts with `digit` (56-69 starts with 5 and with 6)."""
    scale = 10 ** (issuer_range.prefix_length - 1)
    return issuer_range.low <= (digit + 1) * scale - 1 and digit * scale <= issuer_range.high


_RANGES_BY_FIRST_DIGIT: dict[str, tuple[IssuerRange, ...]] = {
    str(digit): tuple(r for r in ISSUER_RANGES if _starts_with(r, digit)) for digit in range(10)
}

# Digit groups joined by single spaces or dashes, not glued to letters, digits or decimal points on either side.
_DIGIT_GROUPS = regex.compile(r"(?<!\w)(?<!\d[.,])\d+(?:[ \-.\u00a0\u2010-\u2015]\d+)*(?![\w]|[.,]\d)")
_GROUP = regex.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def in_issuer_range(digits: str) -> bool:
    return any(r.matches(digits) for r in _RANGES_BY_FIRST_DIGIT.get(digits[0], ()))


def is_card_number(digits: str) -> bool:
    """A published issuer range and length, and a valid Luhn check digit."""
    return MIN_LENGTH <= len(digits) <= MAX_LENGTH and in_issuer_range(digits) and luhn_valid(digits)


def _groups_look_like_a_card(sizes: Sequence[int]) -> bool:
    """One block, or groups as cards are printed: a first group of 4-6 digits, then groups of 3 or more (the last
    may be shorter, as when 17 digits are written in fours)."""
    if len(sizes) == 1:
        return True
    if not 4 <= sizes[0] <= 6:
        return False
    return all(size >= 3 for size in sizes[1:-1]) and sizes[-1] >= 1


class CardDetector:
    entity = CREDIT_CARD
    context: tuple[str, ...] = ()

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        found: list[Candidate] = []
        for run in _DIGIT_GROUPS.finditer(text):
            if run.end() - run.start() < MIN_LENGTH:
                continue
            groups = [(m.start(), m.end()) for m in _GROUP.finditer(text, run.start(), run.end())]
            found += self._cards_in(text, groups)
        return found

    def _cards_in(self, text: str, groups: list[tuple[int, int]]) -> list[Candidate]:
        found: list[Candidate] = []
        first = 0
        while first < len(groups):
            match = self._longest_card_from(text, groups, first)
            if match is None:
                first += 1
                continue
            last = match
            start, end = groups[first][0], groups[last][1]
            if not preceding_words(text, start, 2) & NOT_A_CARD_WORDS:
                found.append(Candidate(self.entity, start, end, CARD_SCORE))
            first = last + 1
        return found

    @staticmethod
    def _longest_card_from(text: str, groups: list[tuple[int, int]], first: int) -> int | None:
        sizes: list[int] = []
        for last in range(first, len(groups)):
            sizes.append(groups[last][1] - groups[last][0])
            if sum(sizes) > MAX_LENGTH:
                break
        while sizes:
            last = first + len(sizes) - 1
            if sum(sizes) >= MIN_LENGTH and _groups_look_like_a_card(sizes):
                digits = "".join(text[start:end] for start, end in groups[first : last + 1])
                if is_card_number(digits):
                    return last
            sizes.pop()
        return None
