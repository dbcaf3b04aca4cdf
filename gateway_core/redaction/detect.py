"""Detection: build the detectors a policy needs once, then find non-overlapping spans in any number of texts."""

from __future__ import annotations

import regex

from gateway_core.redaction import ner
from gateway_core.redaction.cards import CardDetector
from gateway_core.redaction.doubt import DoubtDetector
from gateway_core.redaction.errors import PolicyNotSupportedError
from gateway_core.redaction.phone import PhoneDetector
from gateway_core.redaction.phone_shapes import PhoneLayoutDetector
from gateway_core.redaction.policy import CREDIT_CARD, PHONE_NUMBER, RedactionPolicy
from gateway_core.redaction.recognizers import (
    Detector,
    build_pattern_detector,
    custom_detector,
    deny_list_detector,
    pattern_entity_types,
)
from gateway_core.redaction.spans import Candidate, Span, boosted_score, has_context, resolve_overlaps


def supported_entity_types() -> frozenset[str]:
    """Types detectable here without config: Presidio's pattern types, phone numbers, and NER types if a model is in."""
    types = set(pattern_entity_types()) | {PHONE_NUMBER}
    if ner.ner_available():
        types |= ner.NER_ENTITY_TYPES
    return frozenset(types)


def check_policy_supported(policy: RedactionPolicy) -> None:
    """Raise PolicyNotSupportedError naming every required type that cannot be detected here, and how to fix it."""
    configured = {recognizer.entity for recognizer in policy.custom_recognizers} | set(policy.deny_list)
    builtin = pattern_entity_types() | {PHONE_NUMBER}
    problems: list[str] = []
    unknown: list[str] = []
    for entity in policy.entities:
        if entity in builtin or entity in configured:
            continue
        if entity in ner.NER_ENTITY_TYPES:
            if not ner.ner_available():
                problems.append(f"{entity} needs a spaCy NER model, and none is installed: {ner.INSTALL_HINT}")
            continue
        unknown.append(entity)
    if unknown:
        problems.append(
            f"no recognizer for {', '.join(unknown)}: add a custom_recognizers entry or a deny_list for it, or use a "
            "built-in type (e.g. EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, US_SSN, CRYPTO, URL)"
        )
    if problems:
        raise PolicyNotSupportedError("redaction policy cannot be enforced here: " + "; ".join(problems))


class DetectionEngine:
    """All detectors of one policy, compiled once. `detect` is safe to call from several threads."""

    def __init__(self, policy: RedactionPolicy) -> None:
        check_policy_supported(policy)
        self._min_score = policy.min_score
        cheap: list[Detector] = []
        costly: list[Detector] = []
        for entity in policy.entities:
            detector = build_pattern_detector(entity)
            if detector is not None:
                cheap.append(detector)
        if CREDIT_CARD in policy.entities:
            cheap.append(CardDetector())
        cheap += [custom_detector(config) for config in policy.custom_recognizers]
        cheap += [deny_list_detector(entity, words) for entity, words in policy.deny_list.items() if words]
        if PHONE_NUMBER in policy.entities:
            # Layouts first: python-phonenumbers then only parses what no layout settled.
            cheap.append(PhoneLayoutDetector())
            costly.append(PhoneDetector(policy.phone_regions))
        ner_types = [entity for entity in policy.entities if entity in ner.NER_ENTITY_TYPES]
        if ner_types and ner.ner_available():
            costly.append(ner.NerDetector(ner_types, ner.load_ner_pipeline()))
        if policy.on_doubt == "redact":
            costly.append(DoubtDetector(policy.entities))
        # Cheap detectors run first so that the costly ones can skip what is already covered.
        self.detectors: tuple[Detector, ...] = (*cheap, *costly)

    def detect(self, text: str) -> list[Span]:
        text = blank_escape_sequences(text)
        kept: list[Candidate] = []
        covered: list[tuple[int, int]] = []
        for detector in self.detectors:
            found = self._scored(text, detector, covered)
            if found:
                kept += found
                covered = _merged_intervals(kept)
        return resolve_overlaps(kept)

    def _scored(self, text: str, detector: Detector, covered: list[tuple[int, int]]) -> list[Candidate]:
        kept = []
        for candidate in detector.find(text, covered):
            score = candidate.score
            if score <= 0:
                continue  # ruled out by its detector (a date, an identifier): no context word brings it back
            below = score < self._min_score
            if below and detector.context and has_context(text, candidate.start, candidate.end, detector.context):
                score = boosted_score(score)
            if score >= self._min_score:
                kept.append(candidate)
        return kept


_ESCAPE_SEQUENCE = regex.compile(r"\\[nrt]")


def blank_escape_sequences(text: str) -> str:
    """Escaped line breaks and tabs written out ("...Phone:\\n555-0100", JSON pasted as text) as two spaces, so
    that a value after one is not read as glued to the letter 'n'. Same length: offsets still index the input."""
    if "\\" not in text:
        return text
    return _ESCAPE_SEQUENCE.sub("  ", text)


def _merged_intervals(candidates: list[Candidate]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted((c.start, c.end) for c in candidates):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
