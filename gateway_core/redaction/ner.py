"""Named entities (PERSON, LOCATION, ORGANIZATION, NRP) from a spaCy NER model, only when one is installed.

Nothing is ever downloaded: without an installed model, policies asking for these types are refused by
`check_policy_supported` with the install command to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
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
INSTALL_HINT = "pip install en_core_web_sm (a spaCy model wheel; or `python -m spacy download en_core_web_sm` where "
INSTALL_HINT += "downloads are allowed), then restart the workers"


class _EntitySpan(Protocol):
    label_: str
    start_char: int
    end_char: int


class _Doc(Protocol):
    @property
    def ents(self) -> Iterable[_EntitySpan]: ...


NlpPipeline = Callable[[str], Any]


@cache
def installed_ner_model() -> str | None:
    """Name of an installed spaCy pipeline that has an NER component, preferring English models; None if none."""
    try:
        import spacy.util
    except ImportError:
        return None
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
        if "ner" in meta.get("pipeline", []) or "ner" in meta.get("components", []):
            return name
    return None


def ner_available() -> bool:
    """True when an installed spaCy model can find PERSON/LOCATION/ORGANIZATION. Never downloads anything."""
    return installed_ner_model() is not None


@cache
def load_ner_pipeline() -> NlpPipeline:
    """The installed NER model with only the components NER needs (loaded once per process)."""
    import spacy

    name = installed_ner_model()
    if name is None:
        raise LookupError("no spaCy NER model is installed")
    keep = {"tok2vec", "transformer", "ner"}
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
