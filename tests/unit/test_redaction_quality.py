"""Redaction quality on the labelled synthetic corpus: recall per required type, no change to PII-free text.

This is the project's own corpus, kept as a regression set; the headline measure is test_redaction_independent.py.
Speed is measured by scripts/bench --redaction (devtools/redaction/bench.py), never asserted here.
"""

from __future__ import annotations

import pytest

from devtools.redaction.bench import build_stock_presidio, coverage_by_type, recall_by_type
from devtools.redaction.corpus import REQUIRED_RECALL_TYPES, Sample, pii_free_samples, pii_samples, prompts
from gateway_core.redaction import PlaceholderMap, RedactionPolicy, RedactionResult, Redactor
from tests.unit.test_redaction import no_network  # noqa: F401 - the socket guard fixture, used below

# Everything here, stock Presidio included, runs under the socket guard: no network access.
pytestmark = pytest.mark.usefixtures("no_network")

MIN_RECALL = 0.99


@pytest.fixture()
def redactor(request: pytest.FixtureRequest) -> Redactor:
    request.getfixturevalue("no_network")  # the guard is up before the Redactor is built
    return Redactor(RedactionPolicy())


@pytest.fixture(scope="module")
def labelled() -> list[Sample]:
    return pii_samples(500)


@pytest.fixture()
def redacted(redactor: Redactor, labelled: list[Sample]) -> list[RedactionResult]:
    return [redactor.redact(sample.text, PlaceholderMap()) for sample in labelled]


def test_corpus_is_deterministic_and_labels_point_at_their_values() -> None:
    first, second = pii_samples(60), pii_samples(60)
    assert first == second
    assert {label.entity for sample in pii_samples(500) for label in sample.labels} >= set(REQUIRED_RECALL_TYPES)
    for sample in first:
        for label in sample.labels:
            assert sample.text[label.start : label.end] == label.value


def test_recall_per_required_type(labelled: list[Sample], redacted: list[RedactionResult]) -> None:
    recall = recall_by_type(labelled, [result.text for result in redacted])
    for entity in REQUIRED_RECALL_TYPES:
        assert recall[entity] >= MIN_RECALL, f"{entity} recall {recall[entity]:.3f} < {MIN_RECALL}"


def test_labelled_values_are_covered_character_by_character(
    labelled: list[Sample], redacted: list[RedactionResult]
) -> None:
    coverage = coverage_by_type(labelled, redacted)
    for entity in REQUIRED_RECALL_TYPES:
        assert coverage[entity] >= MIN_RECALL, f"{entity} coverage {coverage[entity]:.3f} < {MIN_RECALL}"


def test_recall_on_one_kilobyte_prompts(redactor: Redactor) -> None:
    samples = prompts(40)
    recall = recall_by_type(samples, [redactor.redact(sample.text, PlaceholderMap()).text for sample in samples])
    for entity in REQUIRED_RECALL_TYPES:
        assert recall[entity] >= MIN_RECALL, f"{entity} recall {recall[entity]:.3f} < {MIN_RECALL}"


def test_pii_free_text_is_left_unchanged(redactor: Redactor) -> None:
    changed = []
    for sample in pii_free_samples(500):
        result = redactor.redact(sample.text, PlaceholderMap())
        if result.text != sample.text:
            changed.append((sample.text, [sample.text[e.start : e.end] for e in result.entities]))
    assert changed == []


def test_recall_is_not_below_stock_presidio(labelled: list[Sample], redacted: list[RedactionResult]) -> None:
    subset = labelled[:200]
    stock = build_stock_presidio(RedactionPolicy().entities)
    stock_recall = recall_by_type(subset, [stock(sample.text) for sample in subset])
    our_recall = recall_by_type(subset, [result.text for result in redacted[: len(subset)]])
    for entity in REQUIRED_RECALL_TYPES:
        assert our_recall[entity] >= stock_recall[entity], (entity, our_recall[entity], stock_recall[entity])
