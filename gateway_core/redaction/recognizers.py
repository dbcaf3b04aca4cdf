"""Pattern detectors built from Presidio's own recognizers, so we stay in step with Presidio's regexes and checksums.

Each predefined Presidio `PatternRecognizer` is instantiated once (cheap: no NLP engine involved) and we reuse its
`patterns`, `context`, regex flags, `validate_result` and `invalidate_result`, with the same scoring rules as
`PatternRecognizer.analyze`. What we add is only about cost and offline operation:
- prefilters that skip a recognizer when its pattern cannot match (a card needs 13 digits, an SSN 9);
- for patterns whose matches never contain whitespace (email, IPv6, URL), the pattern runs only on the
  whitespace-delimited tokens around an anchor ('@' for email, "hex:" or "::" for IPv6), not across the whole text;
- the email check for a known top-level domain uses tldextract's bundled snapshot, never the network.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import regex
import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer import predefined_recognizers as presidio_predefined
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    CryptoRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)

from gateway_core.redaction.cards import NOT_A_CARD_WORDS
from gateway_core.redaction.policy import (
    CREDIT_CARD,
    CRYPTO,
    EMAIL_ADDRESS,
    IBAN_CODE,
    IP_ADDRESS,
    URL,
    US_SSN,
    CustomRecognizer,
)
from gateway_core.redaction.spans import Candidate, preceding_words, token_windows

Validation = Callable[[str], "bool | None"]


class Detector(Protocol):
    """Finds candidate spans of one entity type. Must be safe to call from several threads at once."""

    entity: str
    context: tuple[str, ...]

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        """Candidates in text. `covered`: sorted, disjoint regions that detectors run earlier already found; a
        costly detector may use them to avoid work, as long as it finds everything that could widen a region."""
        ...


# --- helpers shared by several detectors ---------------------------------------------------------------------------

_ASCII_DIGITS = {ord(digit): None for digit in "0123456789"}
_ANY_DIGIT = regex.compile(r"\d")


def digit_count(text: str) -> int:
    """Number of characters `\\d` matches (Unicode decimal digits), with a fast path for ASCII text."""
    if text.isascii():
        return len(text) - len(text.translate(_ASCII_DIGITS))
    return len(_ANY_DIGIT.findall(text))


def luhn_valid(value: str) -> bool:
    digits = [int(char) for char in value if char.isdecimal()]
    if len(digits) < 2:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


_OFFLINE_TLD_EXTRACT = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


def email_domain_is_known(value: str) -> bool:
    """The domain must end in a public suffix (tldextract's bundled snapshot, never the network).

    Presidio asks for a registrable domain (`fqdn`), which rejects addresses at domains that are themselves on the
    public suffix list, such as name@ferrara.it (an Italian province suffix); a known suffix is enough here. It still
    rejects "lodash@4.17.21" or "icon@2x.png".
    """
    return _OFFLINE_TLD_EXTRACT(value).suffix != ""


@cache
def _iban_recognizer() -> IbanRecognizer:
    return IbanRecognizer()


# IBAN lengths of countries that use IBANs but that Presidio's format table lacks (SWIFT's registry and the
# national schemes published alongside it, e.g. Iran's Sheba and the West African BCEAO countries).
EXTRA_IBAN_LENGTHS: dict[str, int] = {
    "AO": 25, "BF": 28, "BI": 27, "BJ": 28, "CF": 27, "CG": 27, "CI": 28, "CM": 27, "CV": 25, "DJ": 27, "DZ": 26,
    "FK": 18, "GA": 27, "GQ": 27, "GW": 25, "HN": 28, "IR": 26, "KM": 27, "MA": 28, "MG": 27, "ML": 28, "MN": 20,
    "MZ": 25, "NE": 28, "NI": 28, "OM": 23, "RU": 33, "SD": 18, "SN": 28, "SO": 23, "ST": 25, "SV": 28, "TD": 27,
    "TG": 28, "YE": 30,
}  # fmt: skip
_IBAN_SEPARATORS = regex.compile(r"[ \-]")


def _mod97_valid(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def iban_checksum_valid(value: str) -> bool | None:
    """Presidio's IBAN validation: mod-97 check digits and the country's format (None: valid only when upper-cased),
    plus the countries in EXTRA_IBAN_LENGTHS by their length and check digits."""
    result: bool | None = _iban_recognizer().validate_result(value)
    if result is False:
        compact = _IBAN_SEPARATORS.sub("", value)
        if EXTRA_IBAN_LENGTHS.get(compact[:2]) == len(compact) and compact.isalnum() and compact.isascii():
            return _mod97_valid(compact.upper())
    return result


# --- detectors ----------------------------------------------------------------------------------------------------


def patterns_of(recognizer: PatternRecognizer) -> list[Pattern]:
    patterns: list[Pattern] = vars(recognizer)["patterns"]
    return patterns


@dataclass(frozen=True)
class _CompiledPattern:
    compiled: regex.Pattern[str]
    score: float
    validate: Validation
    anchor: regex.Pattern[str] | None


class PresidioPatternDetector:
    """Runs one Presidio PatternRecognizer's patterns with Presidio's scoring, plus our prefilter and anchors.

    `anchors` maps a pattern name to a regex that every match of that pattern contains and that never spans
    whitespace; such a pattern runs only on the whitespace-delimited tokens around the anchor's matches.
    """

    def __init__(
        self,
        recognizer: PatternRecognizer,
        *,
        prefilter: Callable[[str], bool] | None = None,
        anchors: Mapping[str, regex.Pattern[str]] | None = None,
        validate: Validation | None = None,
        extra_patterns: Sequence[tuple[str, float, Validation]] = (),
        reject: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.entity: str = recognizer.supported_entities[0]
        self.context: tuple[str, ...] = tuple(word.strip().lower() for word in recognizer.context or () if word.strip())
        flags = recognizer.global_regex_flags or 0
        anchors = anchors or {}
        self._validate: Validation = validate or recognizer.validate_result
        self._invalidate: Validation = recognizer.invalidate_result
        self._patterns = [
            _CompiledPattern(regex.compile(p.regex, flags), p.score, self._validate, anchors.get(p.name))
            for p in patterns_of(recognizer)
        ]
        self._patterns += [
            _CompiledPattern(regex.compile(p, flags), score, check, None) for p, score, check in extra_patterns
        ]
        self._prefilter = prefilter
        self._reject = reject

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        if self._prefilter is not None and not self._prefilter(text):
            return []
        found: list[Candidate] = []
        windows_by_anchor: dict[regex.Pattern[str], list[tuple[int, int]]] = {}
        for pattern in self._patterns:
            if pattern.anchor is None:
                self._scan(text, 0, len(text), pattern, found)
                continue
            if pattern.anchor not in windows_by_anchor:
                windows_by_anchor[pattern.anchor] = token_windows(text, pattern.anchor)
            for start, end in windows_by_anchor[pattern.anchor]:
                self._scan(text, start, end, pattern, found)
        return found

    def _scan(self, text: str, start: int, end: int, pattern: _CompiledPattern, found: list[Candidate]) -> None:
        for match in pattern.compiled.finditer(text, start, end):
            value = match.group()
            if not value:
                continue
            score = pattern.score
            validation = pattern.validate(value)
            if validation is not None:
                score = EntityRecognizer.MAX_SCORE if validation else EntityRecognizer.MIN_SCORE
            if self._invalidate(value):
                score = EntityRecognizer.MIN_SCORE
            if score > EntityRecognizer.MIN_SCORE and not (self._reject and self._reject(text, match.start())):
                found.append(Candidate(self.entity, match.start(), match.end(), score))


class IbanDetector:
    """Presidio's IBAN analysis: on a failed checksum, retry the match without its optional trailing groups.

    Presidio's pattern is upper case; an IBAN written in lower case ("my iban is gb82west1234...") is found by a
    second, case-insensitive pass that accepts only checksum-valid values, dropping trailing groups of four that a
    following word may have lent the match ("... 6756 replaces" reads "repl" as a group).
    """

    def __init__(self) -> None:
        recognizer = IbanRecognizer()
        self.entity: str = recognizer.supported_entities[0]
        self.context: tuple[str, ...] = tuple(word.lower() for word in recognizer.context or ())
        flags = recognizer.global_regex_flags or 0
        self._patterns = [regex.compile(p.regex, flags) for p in patterns_of(recognizer)]
        self._any_case_patterns = [regex.compile(p.regex, flags | regex.IGNORECASE) for p in patterns_of(recognizer)]
        self._score = patterns_of(recognizer)[0].score

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        found: list[Candidate] = []
        for pattern in self._patterns:
            for match in pattern.finditer(text):
                start = match.start()
                for group in range(len(match.groups()), 0, -1):
                    end = match.end(group) if match.end(group) > 0 else match.end()
                    value = text[start:end]
                    if not value:
                        continue
                    validation = iban_checksum_valid(value)
                    score = self._score if validation is None else float(validation)
                    if score > EntityRecognizer.MIN_SCORE:
                        found.append(Candidate(self.entity, start, end, score))
                        break
        if any(char.islower() for char in text):
            found += self._lower_case(text, found)
        return found

    def _lower_case(self, text: str, found: list[Candidate]) -> list[Candidate]:
        extra: list[Candidate] = []
        for pattern in self._any_case_patterns:
            for match in pattern.finditer(text):
                start, end = match.start(), match.end()
                if any(c.start < end and start < c.end for c in (*found, *extra)):
                    continue
                while end - start >= _IBAN_MIN_LENGTH:
                    if iban_checksum_valid(text[start:end].upper()):
                        extra.append(Candidate(self.entity, start, end, EntityRecognizer.MAX_SCORE))
                        break
                    trailing = _LAST_IBAN_GROUP.search(text, start, end)
                    if trailing is None:
                        break
                    end = trailing.start()
        return extra


_IBAN_MIN_LENGTH = 15  # Norway's, the shortest
_LAST_IBAN_GROUP = regex.compile(r"[ \-]?[A-Za-z0-9]{1,4}$")


class RegexDetector:
    """Custom recognizers from config and deny-lists: literal Python regexes, optional checksum."""

    def __init__(
        self,
        entity: str,
        patterns: Sequence[str],
        *,
        score: float,
        context: Sequence[str] = (),
        validate: Validation | None = None,
        flags: int = regex.IGNORECASE | regex.MULTILINE,
    ) -> None:
        self.entity = entity
        self.context = tuple(context)
        self._patterns = [regex.compile(pattern, flags) for pattern in patterns]
        self._score = score
        self._validate = validate

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        found: list[Candidate] = []
        for pattern in self._patterns:
            for match in pattern.finditer(text):
                if match.end() == match.start():
                    continue
                score = self._score
                if self._validate is not None:
                    validation = self._validate(match.group())
                    if validation is False:
                        continue
                    if validation:
                        score = EntityRecognizer.MAX_SCORE
                found.append(Candidate(self.entity, match.start(), match.end(), score))
        return found


def deny_list_detector(entity: str, words: Sequence[str]) -> RegexDetector:
    """Literal words/phrases, whole-word and case-insensitive, as Presidio's deny-list recognizer matches them."""
    alternatives = "|".join(regex.escape(word) for word in sorted(set(words), key=len, reverse=True))
    pattern = r"(?:^|(?<=\W))(?:" + alternatives + r")(?:(?=\W)|$)"
    return RegexDetector(entity, [pattern], score=EntityRecognizer.MAX_SCORE)


def custom_detector(config: CustomRecognizer) -> RegexDetector:
    validators: dict[str | None, Validation | None] = {"luhn": luhn_valid, "iban": iban_checksum_valid, None: None}
    flags = regex.MULTILINE if config.case_sensitive else regex.IGNORECASE | regex.MULTILINE
    return RegexDetector(
        config.entity,
        config.patterns,
        score=config.score,
        context=config.context,
        validate=validators[config.validator],
        flags=flags,
    )


# --- the catalogue of built-in pattern types ------------------------------------------------------------------------


def _mastercard_2_series(value: str) -> bool:
    digits = "".join(char for char in value if char.isdecimal())
    return 2221 <= int(digits[:4]) <= 2720 and luhn_valid(digits)


# Presidio's card pattern predates Mastercard's 2-series (2221-2720); checked with Luhn like the other brands.
_MASTERCARD_2_SERIES = (r"\b(2[2-7]\d{2})[- ]?(\d{4})[- ]?(\d{4})[- ]?(\d{4})\b", 0.3, _mastercard_2_series)

_EMAIL_ANCHOR = regex.compile("@")
_IPV6_ANCHOR = regex.compile(r"[0-9A-Fa-f]:|:[:0-9A-Fa-f]")
_URL_ANCHOR = regex.compile(r"[\w\-]\.\w")


def _build_tuned(entity: str) -> Detector | None:
    if entity == EMAIL_ADDRESS:
        email_domain_is_known("warm.up@example.com")  # loads the suffix snapshot now, not in a worker thread
        return PresidioPatternDetector(
            EmailRecognizer(), anchors={"Email (Medium)": _EMAIL_ANCHOR}, validate=email_domain_is_known
        )
    if entity == CREDIT_CARD:
        return PresidioPatternDetector(
            CreditCardRecognizer(),
            prefilter=lambda text: digit_count(text) >= 13,
            extra_patterns=[_MASTERCARD_2_SERIES],
            reject=lambda text, start: bool(preceding_words(text, start, 2) & NOT_A_CARD_WORDS),
        )
    if entity == IBAN_CODE:
        return IbanDetector()
    if entity == IP_ADDRESS:
        ipv6_patterns = ("IPv4_mapped", "IPv4_embedded", "IPv6", "IPv6_unspecified")
        return PresidioPatternDetector(IpRecognizer(), anchors=dict.fromkeys(ipv6_patterns, _IPV6_ANCHOR))
    if entity == US_SSN:
        return PresidioPatternDetector(UsSsnRecognizer(), prefilter=lambda text: digit_count(text) >= 9)
    if entity == CRYPTO:
        return PresidioPatternDetector(CryptoRecognizer())
    if entity == URL:
        recognizer = UrlRecognizer()
        return PresidioPatternDetector(recognizer, anchors={p.name: _URL_ANCHOR for p in patterns_of(recognizer)})
    return None


@cache
def presidio_pattern_recognizers() -> dict[str, Callable[[], PatternRecognizer]]:
    """Every predefined Presidio pattern recognizer that works with its defaults, by the entity type it finds."""
    catalogue: dict[str, Callable[[], PatternRecognizer]] = {}
    for _, member in inspect.getmembers(presidio_predefined, inspect.isclass):
        if not issubclass(member, PatternRecognizer) or member is PatternRecognizer:
            continue
        recognizer_class: Callable[[], PatternRecognizer] = member
        try:
            recognizer = recognizer_class()
        except Exception:  # a recognizer that needs arguments is simply not offered
            continue
        if len(recognizer.supported_entities) == 1:
            catalogue.setdefault(recognizer.supported_entities[0], recognizer_class)
    return catalogue


def pattern_entity_types() -> frozenset[str]:
    return frozenset(presidio_pattern_recognizers())


def build_pattern_detector(entity: str) -> Detector | None:
    """A detector for a built-in pattern type, or None if Presidio has no pattern recognizer for it."""
    tuned = _build_tuned(entity)
    if tuned is not None:
        return tuned
    recognizer_class = presidio_pattern_recognizers().get(entity)
    if recognizer_class is None:
        return None
    return PresidioPatternDetector(recognizer_class())
