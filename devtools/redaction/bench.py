"""Redaction benchmark: fedgate's Redactor against stock Presidio, same texts, same process, one core.

`scripts/bench --redaction` calls `run_redaction_bench()`. The headline is the independent corpus
(devtools/redaction/independent_corpus.py: presidio-evaluator's public templates, every card network's ranges, the
phone formats people write); the project's own corpus (devtools/redaction/corpus.py) is a regression line.

Stock Presidio here means AnalyzerEngine with its predefined recognizer registry (restricted to the policy's entity
types, so both engines look for the same things) plus AnonymizerEngine with its default operator. To run offline it
gets a blank spaCy pipeline instead of a model download, and its email recognizer checks domains against
tldextract's bundled snapshot; nothing else is changed.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from devtools.redaction import corpus as project_corpus
from devtools.redaction.independent_corpus import IndependentCorpus
from devtools.redaction.samples import Sample
from gateway_core.redaction import PlaceholderMap, RedactionPolicy, RedactionResult, Redactor
from gateway_core.redaction.policy import CREDIT_CARD, EMAIL_ADDRESS, IBAN_CODE, IP_ADDRESS, PHONE_NUMBER, US_SSN

Redact = Callable[[str], str]

REQUIRED_RECALL_TYPES: tuple[str, ...] = (CREDIT_CARD, PHONE_NUMBER, EMAIL_ADDRESS, IBAN_CODE, IP_ADDRESS, US_SSN)
MIN_RECALL = 0.995
MAX_PII_FREE_CHANGED_PCT = 0.5
BENCH_SEED = 61_803  # any seed will do; the tests use others


def bench_policy() -> RedactionPolicy:
    """The policy the figures are for: the default entity types with `on_doubt: redact`, as the demo partners have."""
    return RedactionPolicy(on_doubt="redact")


def build_stock_presidio(entities: Sequence[str]) -> Redact:
    """Stock Presidio analyzer + anonymizer, made to start offline; returns text -> anonymized text."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import EmailRecognizer
    from presidio_anonymizer import AnonymizerEngine

    from gateway_core.redaction.recognizers import email_domain_is_known

    class BlankSpacyNlpEngine(SpacyNlpEngine):
        """spaCy tokenizer only: no model to download (and no NER)."""

        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return email_domain_is_known(pattern_text)

    nlp_engine = BlankSpacyNlpEngine()
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer())
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
    anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]
    wanted = list(entities)

    def redact(text: str) -> str:
        results = analyzer.analyze(text, language="en", entities=wanted)
        return str(anonymizer.anonymize(text=text, analyzer_results=results).text)  # type: ignore[arg-type]

    return redact


def recall_by_type(samples: Sequence[Sample], redacted: Sequence[str]) -> dict[str, float]:
    """Share of labelled values that no longer appear in the redacted text, per entity type."""
    found: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for sample, output in zip(samples, redacted, strict=True):
        for label in sample.labels:
            total[label.entity] += 1
            found[label.entity] += label.value not in output
    return {entity: round(found[entity] / total[entity], 4) for entity in sorted(total)}


def coverage_by_type(samples: Sequence[Sample], results: Sequence[RedactionResult]) -> dict[str, float]:
    """Stricter than recall: share of labelled values whose every non-space character lies in a replaced span."""
    covered: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for sample, result in zip(samples, results, strict=True):
        replaced = {
            index
            for entity in result.entities
            if entity.placeholder is not None
            for index in range(entity.start, entity.end)
        }
        for label in sample.labels:
            total[label.entity] += 1
            positions = [i for i in range(label.start, label.end) if not sample.text[i].isspace()]
            covered[label.entity] += all(i in replaced for i in positions)
    return {entity: round(covered[entity] / total[entity], 4) for entity in sorted(total)}


def missed(samples: Sequence[Sample], redacted: Sequence[str], entity: str) -> list[tuple[str, str]]:
    """(value, text) of every labelled value of `entity` still present after redaction: what to look at first."""
    return [
        (label.value, sample.text)
        for sample, output in zip(samples, redacted, strict=True)
        for label in sample.labels
        if label.entity == entity and label.value in output
    ]


def changed_pct(samples: Sequence[Sample], redacted: Sequence[str]) -> float:
    changed = sum(output != sample.text for sample, output in zip(samples, redacted, strict=True))
    return round(100 * changed / len(samples), 3)


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _time_ms(function: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    function()
    return (time.perf_counter_ns() - started) / 1e6


def _side_by_side(ours: dict[str, float], stock: dict[str, float]) -> dict[str, dict[str, float]]:
    return {entity: {"fedgate": ours[entity], "presidio": stock.get(entity, 0.0)} for entity in ours}


def run_redaction_bench(
    n_prompts: int = 300, n_pii: int = 3000, n_pii_free: int = 2000, seed: int = BENCH_SEED
) -> dict[str, Any]:
    """Time both engines on the same ~1 KB prompts (interleaved), and score recall and changes to PII-free text."""
    policy = bench_policy()
    redactor = Redactor(policy)
    stock = build_stock_presidio(policy.entities)

    def ours(text: str) -> str:
        return redactor.redact(text, PlaceholderMap()).text

    independent = IndependentCorpus(seed)
    bench_prompts = independent.prompts(n_prompts)
    for sample in bench_prompts[:20]:  # warm-up: caches, lazy imports, regex compilation
        ours(sample.text)
        stock(sample.text)
    ours_ms: list[float] = []
    stock_ms: list[float] = []
    gc.collect()
    for sample in bench_prompts:
        ours_ms.append(_time_ms(lambda s=sample: ours(s.text)))  # type: ignore[misc]
        stock_ms.append(_time_ms(lambda s=sample: stock(s.text)))  # type: ignore[misc]

    labelled = independent.pii_samples(n_pii)
    free = independent.pii_free_samples(n_pii_free)
    our_results = [redactor.redact(sample.text, PlaceholderMap()) for sample in labelled]
    our_text = [result.text for result in our_results]
    stock_text = [stock(sample.text) for sample in labelled]
    recall = recall_by_type(labelled, our_text)
    stock_recall = recall_by_type(labelled, stock_text)
    keeping = Redactor(policy.model_copy(update={"on_doubt": "keep"}))
    recall_keeping = recall_by_type(labelled, [keeping.redact(s.text, PlaceholderMap()).text for s in labelled])
    free_keeping = changed_pct(free, [keeping.redact(s.text, PlaceholderMap()).text for s in free])
    free_ours = changed_pct(free, [ours(sample.text) for sample in free])
    free_stock = changed_pct(free, [stock(sample.text) for sample in free])

    regression = project_corpus.pii_samples(500)
    regression_free = project_corpus.pii_free_samples(500)
    regression_recall = recall_by_type(regression, [ours(sample.text) for sample in regression])
    regression_stock = recall_by_type(regression, [stock(sample.text) for sample in regression])

    ours_p50 = statistics.median(ours_ms)
    stock_p50 = statistics.median(stock_ms)
    required = [entity for entity in REQUIRED_RECALL_TYPES if entity in recall]
    counts = Counter(label.entity for sample in labelled for label in sample.labels)
    coverage = coverage_by_type(labelled, our_results)
    figures: dict[str, Any] = {
        "redaction_corpus": (
            f"independent, seed {seed}: {len(labelled)} labelled texts ({sum(counts.values())} values), "
            f"{len(free)} PII-free texts; {len(bench_prompts)} prompts of ~"
            f"{round(statistics.fmean(len(s.text) for s in bench_prompts))} chars for speed"
        ),
        "redaction_p50_ms": round(ours_p50, 3),
        "presidio_p50_ms": round(stock_p50, 3),
        "redaction_p99_ms": round(_percentile(ours_ms, 0.99), 3),
        "presidio_p99_ms": round(_percentile(stock_ms, 0.99), 3),
        "redaction_speedup": round(stock_p50 / ours_p50, 1),
    }
    for entity in sorted(recall):
        figures[f"recall {entity} (fedgate | presidio)"] = (
            f"{recall[entity]:.4f} | {stock_recall.get(entity, 0.0):.4f}  ({counts[entity]} values)"
        )
    figures |= {
        "redaction_recall_min": min(recall[entity] for entity in required),
        "redaction_types_below_presidio": sum(recall[e] < stock_recall.get(e, 0.0) for e in required),
        "redaction_coverage_min": min(coverage[entity] for entity in required),
        "redaction_pii_free_changed_pct": free_ours,
        "presidio_pii_free_changed_pct": free_stock,
        "with on_doubt: keep (the policy default)": (
            f"recall min {min(recall_keeping[entity] for entity in required):.4f}, "
            f"PII-free changed {free_keeping:.3f} %"
        ),
        "regression corpus recall (fedgate | presidio)": ", ".join(
            f"{entity} {regression_recall[entity]:.3f} | {regression_stock.get(entity, 0.0):.3f}"
            for entity in sorted(regression_recall)
        ),
        "regression corpus PII-free texts changed": sum(ours(s.text) != s.text for s in regression_free),
    }
    return figures

if __name__ == "__main__":
    import json

    print(json.dumps(run_redaction_bench(), indent=2))
