"""Recall on text nobody here wrote: the independent corpus (presidio-evaluator's public templates filled by Faker in
many locales, every card network's published ranges and lengths, the phone formats people write), at a modest size.

The seed is not one the benchmark uses, and any seed must pass: FEDGATE_REDACTION_TEST_SEED runs another one.
Speed is measured by scripts/bench --redaction (devtools/redaction/bench.py), never asserted here.
"""

from __future__ import annotations

import os
import random

import pytest

from devtools.redaction.bench import (
    MAX_PII_FREE_CHANGED_PCT,
    MIN_RECALL,
    REQUIRED_RECALL_TYPES,
    build_stock_presidio,
    changed_pct,
    missed,
    recall_by_type,
)
from devtools.redaction.card_numbers import every_card
from devtools.redaction.evaluator_templates import templates_with
from devtools.redaction.independent_corpus import IndependentCorpus
from devtools.redaction.phone_formats import every_phone_format
from devtools.redaction.samples import Sample
from gateway_core.redaction import PlaceholderMap, RedactionPolicy, Redactor
from gateway_core.redaction.policy import CREDIT_CARD, PHONE_NUMBER
from tests.unit.test_redaction import no_network  # noqa: F401 - the socket guard fixture, used below

pytestmark = pytest.mark.usefixtures("no_network")

SEED = int(os.environ.get("FEDGATE_REDACTION_TEST_SEED", "424242"))
POLICIES = {"default": RedactionPolicy(), "on_doubt_redact": RedactionPolicy(on_doubt="redact")}


@pytest.fixture(scope="module")
def corpus() -> IndependentCorpus:
    return IndependentCorpus(SEED)


@pytest.fixture(scope="module")
def labelled(corpus: IndependentCorpus) -> list[Sample]:
    return corpus.pii_samples(1500)


@pytest.fixture(scope="module")
def pii_free(corpus: IndependentCorpus) -> list[Sample]:
    return corpus.pii_free_samples(1000)


def redact_all(policy: RedactionPolicy, samples: list[Sample]) -> list[str]:
    redactor = Redactor(policy)
    return [redactor.redact(sample.text, PlaceholderMap()).text for sample in samples]


def test_corpus_is_fixed_by_its_seed_and_labels_point_at_their_values() -> None:
    first, second = IndependentCorpus(SEED + 1).pii_samples(80), IndependentCorpus(SEED + 1).pii_samples(80)
    assert first == second
    assert first != IndependentCorpus(SEED + 2).pii_samples(80)
    for sample in first:
        for label in sample.labels:
            assert sample.text[label.start : label.end] == label.value
    assert {sample.source for sample in first} == {"evaluator-templates", "card-networks", "phone-formats"}


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_recall_per_required_type(labelled: list[Sample], policy_name: str) -> None:
    output = redact_all(POLICIES[policy_name], labelled)
    recall = recall_by_type(labelled, output)
    for entity in REQUIRED_RECALL_TYPES:
        assert recall[entity] >= MIN_RECALL, (entity, recall[entity], missed(labelled, output, entity)[:5])


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_pii_free_text_is_almost_never_changed(pii_free: list[Sample], policy_name: str) -> None:
    output = redact_all(POLICIES[policy_name], pii_free)
    changed = [(sample.text, out) for sample, out in zip(pii_free, output, strict=True) if out != sample.text]
    assert changed_pct(pii_free, output) <= MAX_PII_FREE_CHANGED_PCT, changed


def test_recall_is_not_below_stock_presidio_on_the_same_texts(labelled: list[Sample]) -> None:
    subset = labelled[:300]
    stock = build_stock_presidio(RedactionPolicy().entities)
    stock_recall = recall_by_type(subset, [stock(sample.text) for sample in subset])
    our_recall = recall_by_type(subset, redact_all(RedactionPolicy(), subset))
    for entity in REQUIRED_RECALL_TYPES:
        assert our_recall[entity] >= stock_recall.get(entity, 0.0), (entity, our_recall, stock_recall)


def _in_templates(corpus: IndependentCorpus, field: str, values: list[str]) -> list[Sample]:
    """Each value in one of the evaluator's templates that hold `field`."""
    templates = templates_with({field})
    rng = random.Random(SEED)
    return [corpus.filler.fill(rng.choice(templates), "en_US", {field: lambda v=value: v}) for value in values]


def test_every_published_card_range_and_length_is_found(corpus: IndependentCorpus) -> None:
    for _ in range(3):
        cards = [number for _, number in every_card(random.Random(SEED))]
        samples = _in_templates(corpus, "credit_card_number", cards)
        assert missed(samples, redact_all(RedactionPolicy(), samples), CREDIT_CARD) == []


def test_every_listed_phone_format_is_found(corpus: IndependentCorpus) -> None:
    samples = _in_templates(corpus, "phone_number", every_phone_format(random.Random(SEED)))
    assert missed(samples, redact_all(RedactionPolicy(), samples), PHONE_NUMBER) == []
