"""Phone numbers by how they are written, whether or not they are valid in a numbering plan.

python-phonenumbers (phone.py) only reports numbers that are valid in a plan it knows: it misses numbers in the
ranges reserved for fiction and tests (555-0100..0199, 07700 900xxx), unassigned area codes, countries outside the
policy's regions, and it drops an extension written "x149" after some formats. To a reader these are all phone
numbers, so this detector reads the layout instead:

- an international prefix ('+', or '00'/'011' and a separate group, as in "001-415-555-0100", "0044 20 7946 0018");
- the North American layout, 3-3-4 digits with separators, optionally after "1", "+1" or "001";
- a national trunk '0' with grouped digits ("0113 496 0018", "01 23 45 67 89"), or a parenthesised area code;
- an extension ("x149", "ext. 12", "extension 4") after any of these.
Those are phone numbers without further evidence. Other layouts ("416 6808", "61 60 34", a bare run of ten digits)
are phone numbers only with a phone word near them ("call", "mobile", "fax", ...), as Presidio's context rule does.

Never phone numbers: dates (04.06.1987, 2008-07-09), decimals (164.7825), thousands groupings ("1 234 567"),
numbers whose last group is one digit (ISBN "0-647-97718-4"), and numbers glued to words or identifiers.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from gateway_core.redaction.number_layout import (
    Layout,
    is_decimal,
    is_thousands,
    is_version_like,
    never_a_phone_number,
    parse_layout,
)
from gateway_core.redaction.phone import NOT_A_PHONE_WORDS, PHONE_CONTEXT, masked
from gateway_core.redaction.policy import PHONE_NUMBER
from gateway_core.redaction.spans import Candidate, preceding_words

SURE_SCORE = 0.6  # above the default threshold without context
LAYOUT_SCORE = 0.5
WEAK_SCORE = 0.3  # needs a context word (+0.35) to reach the default threshold
BARE_SCORE = 0.1  # a bare run of digits: needs a context word too

MIN_DIGITS = 6
MAX_DIGITS = 15  # E.164, country code included

_SEPARATOR = r"(?:[\-./ \u00a0\u2010-\u2015]|\s[\-\u2010-\u2015]\s)"
_PARENTHESISED = r"\(\d{1,5}\)(?:\s?[\-./]?\s?)"
_NUMBER = (
    rf"(?:\+\s?)?(?:{_PARENTHESISED}\d{{1,14}}|\d{{1,14}})"
    rf"(?:{_SEPARATOR}?{_PARENTHESISED}\d{{1,14}}|{_SEPARATOR}\d{{1,14}})*"
)
_IDD_GROUP = regex.compile(r"00|00[1-9]\d{0,2}|011\d{0,3}")
_EXTENSION = r"(?:,?\s?(?:x|ext\.?|extn\.?|extension|\#)\s?\d{1,6})"
# Not glued on the left to a word, an identifier, a decimal or a sign; not followed by a word character (an
# extension glued as "x149" is part of the match).
_CANDIDATE = regex.compile(
    rf"(?<![\w+\-./#@$€£¥%]\d*|\d[,:])(?P<number>{_NUMBER})(?P<extension>{_EXTENSION})?(?![\w]|[.,]\d)",
    flags=regex.IGNORECASE,
)


def _is_north_american(sizes: Sequence[int], groups: Sequence[str]) -> bool:
    if tuple(sizes[-3:]) != (3, 3, 4):
        return False
    lead = groups[:-3]
    return not lead or (len(lead) == 1 and lead[0] in ("1", "001"))


def layout_score(layout: Layout, has_extension: bool) -> float:
    """How sure the layout alone makes us that this is a phone number (0 when it is not one)."""
    sizes, groups = layout.sizes, layout.groups
    if not groups:
        return 0.0
    digits = layout.digit_count
    # An international dialling prefix written as its own group: 001-, 0044 , 00420 , 011 44 (not 000).
    idd = (
        len(groups) > 1
        and groups[0][:2] in ("00", "01")
        and layout.separators[0] != "."
        and _IDD_GROUP.fullmatch(groups[0]) is not None
    )
    if not MIN_DIGITS <= digits <= MAX_DIGITS + (len(groups[0]) if idd else 0):
        return 0.0
    if never_a_phone_number(layout):
        return 0.0
    if layout.international_lead or idd:
        return SURE_SCORE if digits >= 7 else WEAK_SCORE
    if has_extension and digits >= 7:
        return SURE_SCORE
    if len(groups) > 1 and _is_north_american(sizes, groups):
        return SURE_SCORE
    if is_version_like(layout):
        return BARE_SCORE
    if is_decimal(layout):
        # "9727.1512-Fax" and "555.0100" can be numbers; "238.204 GB" is not
        return BARE_SCORE if digits >= 8 or sizes == (3, 4) else 0.0
    if not layout.parenthesised and is_thousands(layout):
        return BARE_SCORE if digits >= 7 else 0.0
    if len(groups) > 1 and groups[0].startswith("0") and 9 <= digits <= 12:
        return LAYOUT_SCORE  # national trunk prefix: 0113 496 0018, 01 23 45 67 89, 030/1234567
    if layout.parenthesised and digits >= 7:
        return LAYOUT_SCORE
    if len(groups) > 1:
        return WEAK_SCORE
    return BARE_SCORE


class PhoneLayoutDetector:
    """Finds phone numbers by layout; runs after the card and IBAN detectors and ignores what they found."""

    entity = PHONE_NUMBER
    context = PHONE_CONTEXT

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        scan_text = masked(text, covered) if covered else text
        found: list[Candidate] = []
        for match in _CANDIDATE.finditer(scan_text):
            number = match.group("number")
            # A match may start at '(' or '+' and still hold too few digits to be worth parsing.
            if sum(char.isdigit() for char in number) < MIN_DIGITS:
                continue
            score = layout_score(parse_layout(number), match.group("extension") is not None)
            if score > 0 and not preceding_words(scan_text, match.start(), 3) & NOT_A_PHONE_WORDS:
                found.append(Candidate(self.entity, match.start(), match.end(), score))
        return found
