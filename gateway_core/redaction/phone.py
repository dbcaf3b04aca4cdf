"""Phone numbers via python-phonenumbers, as Presidio's PhoneRecognizer finds them, at a fraction of the cost.

Presidio runs `phonenumbers.PhoneNumberMatcher` over the whole text once per region (8 by default); most of that
time goes into parsing every number in the text (dates, prices, counts) 8 times. Here:
1. a cheap regex keeps only runs of at least 7 digits with phone punctuation between them, and the matcher runs on
   the whitespace-delimited window around each run (bounding whitespace included, so the matcher's checks of the
   neighbouring characters see the real ones);
2. one matcher pass per window tries every region on each candidate (the matcher's candidate extraction does not
   depend on the region, only its parse-and-verify step does); regions sharing a country calling code (US/CA)
   validate identically and are tried once;
3. what other detectors already found (a card, an IBAN) is blanked out first when it forms whole tokens, so a
   card followed by a phone number are read as two things.
Leniency is VALID, Presidio's default: the number must be valid in its numbering plan.

Two additions of our own:
- Identifier-like numbers need a context word. A number without a country code that is a bare run of digits
  ("seed 1430380151"), a decimal ("164.7825") or labelled without a space ("tel:02079460958") scores below the
  policy threshold unless a word such as "phone", "call" or "mobile" is near it; one glued into an identifier
  ("ORD-2024-004512", "#5551234567") is never a phone number. Without this every 10-digit id is a phone number.
- Adjacent numbers. phonenumbers reads "+33 1 23 45 67 89 020 7946 0958" as one candidate, fails to parse it and
  finds at best one of the two (Presidio misses both). When digits of a window stay uncovered, we split its tokens
  into the numbers that cover the most digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import phonenumbers
import regex
from phonenumbers import Leniency, PhoneNumberMatch, PhoneNumberMatcher

from gateway_core.redaction.number_layout import is_version_like, never_a_phone_number, parse_layout
from gateway_core.redaction.policy import PHONE_NUMBER
from gateway_core.redaction.spans import Candidate, has_context, preceding_words, token_windows

INTERNATIONAL_SCORE = 0.7
NATIONAL_SCORE = 0.4  # Presidio's PhoneRecognizer.SCORE
IDENTIFIER_LIKE_SCORE = 0.1

PHONE_CONTEXT: tuple[str, ...] = (
    # Presidio's PhoneRecognizer.CONTEXT ...
    "phone",
    "number",
    "telephone",
    "cell",
    "cellphone",
    "mobile",
    "call",
    # ... and other words prompts put around phone numbers.
    "tel",
    "fax",
    "contact",
    "reach",
    "whatsapp",
    "sms",
    "text",
    "dial",
    "ring",
    "hotline",
    "landline",
    "office",
    "desk",
    "callback",
    "message",
    "voicemail",
    "answer",
    "telefon",
    "téléphone",
    "tél",
    "handy",
    "portable",
)

# Words that name a number as another kind of identifier when they are among the three words before it.
NOT_A_PHONE_WORDS: frozenset[str] = frozenset(
    {"isbn", "issn", "ean", "gtin", "upc", "barcode", "sku", "doi", "license", "licence", "passport", "serial"}
)

MIN_DIGITS = 7
MAX_DIGITS = 18  # 15 (E.164) plus an international dialling prefix
MAX_TOKENS_PER_NUMBER = 7
MAX_SPLIT_ATTEMPTS = 40

_SEPARATORS = " \t\\-./()\u00a0\u2010-\u2015"
# Digits with phone punctuation in between, starting and ending on whole digit groups (a run stops before "(24h)",
# but "4960066x123" keeps its extension); only runs holding at least MIN_DIGITS digits are looked at.
_CANDIDATE_RUN = regex.compile(rf"(?<!\w)\d[\d{_SEPARATORS}]{{{MIN_DIGITS - 2},}}\d(?:(?!\w)|(?=[xX]\d))")
# An extension written as its own words after the number: "+1 430-633-8770 ext. 941".
_EXTENSION_TAIL = regex.compile(r"\s*(?:ext\.?|extn\.?|extension|x|#)\s*\d{1,7}(?!\w)\s?", flags=regex.IGNORECASE)
_EXTENSION_AT_END = regex.compile(r"\s*(?:ext\.?|extn\.?|extension|x|#)\s*\d{1,7}$", flags=regex.IGNORECASE)
_INTERNATIONAL_LEAD = regex.compile(r"\s*(?:[+\uff0b]|00)")
_NUMBER_START = regex.compile(r"[\d+\uff0b(]")
_TOKEN = regex.compile(r"\S+")
_WHITESPACE_BACKWARDS = regex.compile(r"\s", flags=regex.REVERSE)
_DIGIT = regex.compile(r"\d")
_NON_SPACE = regex.compile(r"\S")
_NON_SPACE_BACKWARDS = regex.compile(r"\S", flags=regex.REVERSE)
# Windows that are only a date or timestamp, or a hyphenated ISBN (its last group is one check character), are never
# phone numbers: no need to parse them in every region.
_NOT_A_NUMBER_WINDOW = regex.compile(
    r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./]\d{1,2}[./]\d{1,2})"
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,5}(?:-\d{1,7}){2,4}-[\dXx]"
)
_TRAILING_PUNCTUATION = ".,;:!?"
_DECIMAL_NUMBER = regex.compile(r"[-+]?\d+\.\d+")
_PLUS_SIGNS = ("+", "\uff0b")

Interval = tuple[int, int]


class _MultiRegionMatcher(PhoneNumberMatcher):
    """phonenumbers' matcher, trying each region in turn on every candidate it extracts."""

    def __init__(self, text: str, regions: Sequence[str]) -> None:
        super().__init__(text, regions[0], leniency=Leniency.VALID)
        self._regions = regions

    def _parse_and_verify(self, candidate: str, offset: int) -> PhoneNumberMatch | None:
        # The windows were chosen for runs of MIN_DIGITS digits; shorter pieces the matcher tries inside them are not
        # numbers we look for, and parsing each one in every region is what would cost the most.
        if not _enough_digits(candidate):
            return None
        # A number written with '+' parses the same whatever the region: one try is enough.
        regions = self._regions[:1] if candidate.lstrip("([ ").startswith(_PLUS_SIGNS) else self._regions
        for region in regions:
            self.preferred_region = region
            match = super()._parse_and_verify(candidate, offset)
            if match is not None:
                return match
        return None

    def verify_exact(self, candidate: str, offset: int) -> PhoneNumberMatch | None:
        """Is text[offset:offset+len(candidate)] itself a valid number (no search for candidates inside it)?"""
        return self._parse_and_verify(candidate, offset)


def distinct_calling_code_regions(regions: Sequence[str]) -> tuple[str, ...]:
    """The first region of each country calling code; unknown region codes are dropped (they validate nothing)."""
    seen: set[int] = set()
    kept: list[str] = []
    for region in regions:
        code = phonenumbers.country_code_for_region(region)
        if code and code not in seen:
            seen.add(code)
            kept.append(region)
    return tuple(kept)


def masked(text: str, covered: Sequence[Interval]) -> str:
    """text with the covered regions that stand alone blanked out (same length, so offsets stay valid).

    A region stands alone when no digit, letter or '+' touches it ("555-0100-Office" is alone, "-Office" being a
    label). A region glued to them stays visible: in "+3937705084465" a card match on the digits must not hide the
    wider phone number from the matcher.
    """
    pieces: list[str] = []
    position = 0
    for start, end in covered:
        starts_token = start == 0 or not (text[start - 1].isalnum() or text[start - 1] in _PLUS_SIGNS)
        ends_token = end == len(text) or not text[end].isalnum()
        if not (starts_token and ends_token):
            continue
        pieces.append(text[position:start])
        pieces.append(" " * (end - start))
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _glue(prefix: str) -> Literal["none", "label", "identifier"]:
    """What a number is glued to, from the characters between the start of its token and the number.

    "ORD-", "INV_2024/", "#" make it part of an identifier; "Tel:", "phone=" label it, which is left to context.
    """
    if not prefix or not (prefix[0].isalpha() or prefix[0] == "#"):
        return "none"
    if prefix[0] == "#" or prefix[-1] in "-_/#" or prefix[-1].isalnum():
        return "identifier"
    return "label"


def _enough_digits(run: str) -> bool:
    return len(_DIGIT.findall(run)) >= MIN_DIGITS


def _token_start(text: str, position: int) -> int:
    before = _WHITESPACE_BACKWARDS.search(text, 0, position)
    return before.end() if before else 0


class PhoneDetector:
    entity = PHONE_NUMBER
    context = PHONE_CONTEXT

    def __init__(self, regions: Sequence[str]) -> None:
        # With no region at all, numbers written with a country code are still found ("ZZ": unknown region).
        self._regions = distinct_calling_code_regions(regions) or ("ZZ",)

    def find(self, text: str, covered: Sequence[Interval] = ()) -> list[Candidate]:
        # Matching runs on a copy with other detectors' findings blanked out; scores and context read the original.
        scan_text = masked(text, covered) if covered else text
        found: list[Candidate] = []
        for window_start, window_end in token_windows(scan_text, _CANDIDATE_RUN, _enough_digits):
            extension = _EXTENSION_TAIL.match(scan_text, window_end - 1)
            if extension is not None:
                window_end = extension.end()
            content_start = _NON_SPACE.search(scan_text, window_start, window_end)
            content_end = _NON_SPACE_BACKWARDS.search(scan_text, window_start, window_end)
            if content_start is None or content_end is None:
                continue
            content = scan_text[content_start.start() : content_end.end()]
            if _NOT_A_NUMBER_WINDOW.fullmatch(content.rstrip(_TRAILING_PUNCTUATION)):
                continue
            if self._skip_without_matching(text, content, content_start.start()):
                continue
            matcher = _MultiRegionMatcher(scan_text[window_start:window_end], self._regions)
            window_found = [self._candidate(text, window_start, match) for match in matcher]
            found += window_found
            found += self._split_adjacent_numbers(scan_text, text, window_start, window_end, matcher, window_found)
        return found

    @staticmethod
    def _skip_without_matching(text: str, content: str, content_start: int) -> bool:
        """True for a single-token window whose every possible match would score below threshold anyway."""
        if any(char.isspace() for char in content) or _INTERNATIONAL_LEAD.match(content):
            return False
        number_start = _NUMBER_START.search(content)
        prefix_length = number_start.start() if number_start else len(content)
        glue = _glue(content[:prefix_length])
        if glue == "identifier":
            return True
        bare = content.rstrip(_TRAILING_PUNCTUATION)
        if glue == "label" or bare.isdecimal() or _DECIMAL_NUMBER.fullmatch(bare):
            return not has_context(text, content_start + prefix_length, content_start + len(content), PHONE_CONTEXT)
        return False

    def _candidate(self, text: str, window_start: int, match: PhoneNumberMatch) -> Candidate:
        start, end = window_start + match.start, window_start + match.end
        return Candidate(self.entity, start, end, self._score(text, start, match.raw_string))

    @staticmethod
    def _score(text: str, start: int, raw: str) -> float:
        layout = parse_layout(_EXTENSION_AT_END.sub("", raw))
        if never_a_phone_number(layout):
            return 0.0  # a date or an ISBN that happens to be valid in some numbering plan
        if preceding_words(text, start, 3) & NOT_A_PHONE_WORDS:
            return 0.0
        if _INTERNATIONAL_LEAD.match(raw):
            return INTERNATIONAL_SCORE
        glue = _glue(text[_token_start(text, start) : start])
        if glue == "identifier":
            return 0.0
        if glue == "label" or raw.isdecimal() or _DECIMAL_NUMBER.fullmatch(raw) or is_version_like(layout):
            return IDENTIFIER_LIKE_SCORE
        return NATIONAL_SCORE

    def _split_adjacent_numbers(
        self,
        scan_text: str,
        text: str,
        window_start: int,
        window_end: int,
        matcher: _MultiRegionMatcher,
        window_found: list[Candidate],
    ) -> list[Candidate]:
        """Numbers in consecutive whitespace-separated tokens of a window the matcher could not read in full.

        Picks the split of the tokens into numbers that covers the most digits (a small dynamic programme over
        token positions), so "04 81 12 86 73 0141 496 0113" becomes two numbers rather than one long valid-looking
        number and a leftover. Each segment is checked exactly as the matcher checks a candidate.
        """
        tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(scan_text, window_start, window_end)]
        if len(tokens) < 2:
            return []
        found_positions = {i for c in window_found for i in range(c.start, c.end)}
        digits = [m.start() for m in _DIGIT.finditer(scan_text, window_start, window_end)]
        if all(position in found_positions for position in digits):
            return []
        count = len(tokens)
        digits_before = [sum(1 for position in digits if position < start) for start, _ in tokens] + [len(digits)]
        # A token written with a leading '+' starts a number: no segment runs across one.
        starts_number = [scan_text.startswith(_PLUS_SIGNS, start) for start, _ in tokens]
        # best[i]: (digits covered, numbers found) for the best split of tokens[i:]
        best: list[tuple[int, list[Candidate]]] = [(0, [])] * (count + 1)
        attempts = 0
        for first in range(count - 1, -1, -1):
            best[first] = best[first + 1]
            for last in range(first + 1, min(count, first + MAX_TOKENS_PER_NUMBER) + 1):
                segment_digits = digits_before[last] - digits_before[first]
                if segment_digits > MAX_DIGITS or attempts >= MAX_SPLIT_ATTEMPTS:
                    break
                if last - 1 > first and starts_number[last - 1]:
                    break
                if segment_digits < MIN_DIGITS or (first, last) == (0, count):
                    continue  # too short, or the whole window, which the matcher has already tried
                start = tokens[first][0]
                segment = scan_text[start : tokens[last - 1][1]].rstrip(_TRAILING_PUNCTUATION)
                attempts += 1
                match = matcher.verify_exact(segment, start - window_start)
                if match is not None and segment_digits + best[last][0] > best[first][0]:
                    best[first] = (segment_digits + best[last][0], [self._candidate(text, window_start, match)])
                    best[first][1].extend(best[last][1])
        return best[0][1]
