"""Named entities (PERSON, LOCATION, ORGANIZATION, NRP) from a spaCy NER model, only when one is installed.

Nothing is ever downloaded: without an installed model, policies asking for these types are refused by
`check_policy_supported` with the install command to run. The model is the first installed spaCy package with an
entity recogniser (English models preferred), or the one FEDGATE_NER_MODEL names: a package name or the directory
of a saved pipeline (`nlp.to_disk(...)`), statistical ("ner") or rule-based ("entity_ruler").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from gateway_core.redaction.policy import LOCATION, ORGANIZATION, PERSON
from gateway_core.redaction.spans import Candidate

NRP = "NRP"
NER_ENTITY_TYPES: frozenset[str] = frozenset({PERSON, LOCATION, ORGANIZATION, NRP})

# Presidio's default spaCy label mapping (NerModelConfiguration), restricted to the types above.
SPACY_LABEL_TO_ENTITY: dict[str, str] = {
    "PER": PERSON,
    "PERSON": PERSON,
    "NORP": NRP,
    "FAC": LOCATION,
    "LOC": LOCATION,
    "GPE": LOCATION,
    "LOCATION": LOCATION,
    "ORG": ORGANIZATION,
    "ORGANIZATION": ORGANIZATION,
}
NER_SCORE = 0.85  # Presidio's NerModelConfiguration.default_score

PREFERRED_MODELS: tuple[str, ...] = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")
MODEL_ENV = "FEDGATE_NER_MODEL"
ENTITY_COMPONENTS: frozenset[str] = frozenset({"ner", "entity_ruler"})  # components that set doc.ents
INSTALL_HINT = (
    "pip install 'fedgate[ner]' and a spaCy model (`python -m spacy download en_core_web_sm`, or pip install the "
    f"model's wheel file), or set {MODEL_ENV} to a saved pipeline's directory; then restart the workers"
)


class _EntitySpan(Protocol):
    label_: str
    start_char: int
    end_char: int


class _Doc(Protocol):
    @property
    def ents(self) -> Iterable[_EntitySpan]: ...


NlpPipeline = Callable[[str], Any]


def _has_entity_component(meta: dict[str, Any]) -> bool:
    return bool(ENTITY_COMPONENTS & (set(meta.get("pipeline", [])) | set(meta.get("components", []))))


@cache
def installed_ner_model() -> str | None:
    """Name or directory of the spaCy pipeline to use for NER, None if there is none. Never downloads anything."""
    try:
        import spacy.util
    except ImportError:
        return None
    configured = os.environ.get(MODEL_ENV, "").strip()
    if configured:
        return configured if _configured_model_usable(configured) else None
    try:
        installed = set(spacy.util.get_installed_models())
    except Exception:  # a broken spaCy install means no NER, not a crash at startup
        return None
    ordered = [name for name in PREFERRED_MODELS if name in installed] + sorted(installed - set(PREFERRED_MODELS))
    for name in ordered:
        try:
            meta = spacy.util.get_model_meta(spacy.util.get_package_path(name))
        except Exception:  # unreadable package metadata: skip that model
            continue
        if _has_entity_component(meta):
            return name
    return None


def _configured_model_usable(model: str) -> bool:
    import spacy.util

    try:
        path = Path(model)
        if path.is_dir():
            meta = spacy.util.get_model_meta(path)
        elif spacy.util.is_package(model):
            meta = spacy.util.get_model_meta(spacy.util.get_package_path(model))
        else:
            return False
    except Exception:  # unreadable metadata: not usable
        return False
    return _has_entity_component(meta)


def ner_available() -> bool:
    """True when a spaCy pipeline that can find PERSON/LOCATION/ORGANIZATION is installed or configured."""
    return installed_ner_model() is not None


@cache
def load_ner_pipeline() -> NlpPipeline:
    """The NER pipeline with only the components NER needs (loaded once per process)."""
    import spacy

    name = installed_ner_model()
    if name is None:
        raise LookupError("no spaCy NER model is installed")
    keep = {"tok2vec", "transformer", *ENTITY_COMPONENTS}
    nlp = spacy.load(name)
    nlp.select_pipes(enable=[pipe for pipe in nlp.pipe_names if pipe in keep])
    return nlp


class NerDetector:
    """Runs the NER pipeline once per text and reports the requested entity types."""

    context: tuple[str, ...] = ()

    def __init__(self, entities: Iterable[str], nlp: NlpPipeline) -> None:
        self.wanted = frozenset(entities) & NER_ENTITY_TYPES
        self.entity = ",".join(sorted(self.wanted))
        self._nlp = nlp

    def find(self, text: str, covered: Sequence[tuple[int, int]] = ()) -> list[Candidate]:
        doc: _Doc = self._nlp(text)
        found: list[Candidate] = []
        for span in doc.ents:
            entity = SPACY_LABEL_TO_ENTITY.get(span.label_)
            if entity is not None and entity in self.wanted:
                found.append(Candidate(entity, span.start_char, span.end_char, NER_SCORE))
        return found
