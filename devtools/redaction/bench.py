"""Redaction benchmark: our Redactor against stock Presidio, same prompts, same process, one core.

`scripts/bench --redaction` calls `run_redaction_bench()`. Stock Presidio here means AnalyzerEngine with its
predefined recognizer registry (restricted to the policy's entity types, so both engines look for the same things)
plus AnonymizerEngine with its default operator. To run offline it gets a blank spaCy pipeline instead of a model
download, and its email recognizer checks domains against tldextract's bundled snapshot; nothing else is changed.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from gateway_core.redaction.corpus import REQUIRED_RECALL_TYPES, Sample, pii_free_samples, prompts
from gateway_core.redaction.mapping import PlaceholderMap
from gateway_core.redaction.ner import ner_available
from gateway_core.redaction.policy import RedactionPolicy
from gateway_core.redaction.recognizers import email_domain_is_known
from gateway_core.redaction.redactor import RedactionResult, Redactor

Redact = Callable[[str], str]


def build_stock_presidio(entities: Sequence[str]) -> Redact:
    """Stock Presidio analyzer + anonymizer, made to start offline; returns text -> anonymized text."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import EmailRecognizer
    from presidio_anonymizer import AnonymizerEngine

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


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _time_ms(function: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    function()
    return (time.perf_counter_ns() - started) / 1e6


def run_redaction_bench(n_prompts: int = 300, n_pii_free: int = 500) -> dict[str, Any]:
    """Time both engines on the same ~1 KB prompts (interleaved), and score recall / false positives."""
    policy = RedactionPolicy()
    redactor = Redactor(policy)
    stock = build_stock_presidio(policy.entities)
    bench_prompts = prompts(n_prompts)

    def ours(text: str) -> str:
        return redactor.redact(text, PlaceholderMap()).text

    for sample in bench_prompts[:20]:  # warm-up: caches, lazy imports, regex compilation
        ours(sample.text)
        stock(sample.text)

    ours_ms: list[float] = []
    stock_ms: list[float] = []
    ours_out: list[str] = []
    stock_out: list[str] = []
    gc.collect()
    for sample in bench_prompts:
        ours_ms.append(_time_ms(lambda s=sample: ours_out.append(ours(s.text))))  # type: ignore[misc]
        stock_ms.append(_time_ms(lambda s=sample: stock_out.append(stock(s.text))))  # type: ignore[misc]

    free = pii_free_samples(n_pii_free)
    ours_p50 = statistics.median(ours_ms)
    stock_p50 = statistics.median(stock_ms)
    recall = recall_by_type(bench_prompts, ours_out)
    coverage = coverage_by_type(bench_prompts, [redactor.redact(s.text, PlaceholderMap()) for s in bench_prompts])
    presidio_recall = recall_by_type(bench_prompts, stock_out)
    return {
        "n_prompts": len(bench_prompts),
        "mean_prompt_chars": round(statistics.fmean(len(s.text) for s in bench_prompts)),
        "redaction_p50_ms": round(ours_p50, 3),
        "redaction_p99_ms": round(_percentile(ours_ms, 0.99), 3),
        "presidio_p50_ms": round(stock_p50, 3),
        "presidio_p99_ms": round(_percentile(stock_ms, 0.99), 3),
        "speedup": round(stock_p50 / ours_p50, 1),
        "recall": recall,
        "presidio_recall": presidio_recall,
        "coverage": coverage,
        "required_recall_types": list(REQUIRED_RECALL_TYPES),
        "labelled_values": dict(sorted(Counter(label.entity for s in bench_prompts for label in s.labels).items())),
        "pii_free_samples": len(free),
        "pii_free_changed": sum(ours(s.text) != s.text for s in free),
        "presidio_pii_free_changed": sum(stock(s.text) != s.text for s in free),
        "ner_available": ner_available(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_redaction_bench(), indent=2))
