"""A labelled text: where each PII value sits, so recall can be measured without trusting any detector."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class LabelledValue:
    entity: str
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class Sample:
    text: str
    labels: tuple[LabelledValue, ...] = ()
    source: str = ""  # which generator made it, e.g. "evaluator-templates", "card-networks"

    @property
    def is_pii_free(self) -> bool:
        return not self.labels


def join_samples(samples: Iterable[Sample], target_chars: int, separator: str = " ") -> Sample:
    """Concatenate samples until the next one would pass `target_chars`; labels keep pointing at their values."""
    parts: list[str] = []
    labels: list[LabelledValue] = []
    position = 0
    for sample in samples:
        if position and position + len(separator) + len(sample.text) > target_chars:
            break
        if position:
            parts.append(separator)
            position += len(separator)
        parts.append(sample.text)
        labels += [LabelledValue(lv.entity, lv.start + position, lv.end + position, lv.value) for lv in sample.labels]
        position += len(sample.text)
    return Sample("".join(parts), tuple(labels), "prompt")
