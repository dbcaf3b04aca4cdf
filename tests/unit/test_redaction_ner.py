"""The NER path on real spaCy objects: a pipeline built here (blank English + entity_ruler), saved to disk, found
through FEDGATE_NER_MODEL, loaded by spaCy and run by the Redactor. No model is downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy

from gateway_core.redaction import (
    PlaceholderMap,
    PolicyNotSupportedError,
    RedactionError,
    RedactionPolicy,
    Redactor,
    check_policy_supported,
    ner_available,
)
from gateway_core.redaction import ner as ner_module

PATTERNS = [
    {"label": "PERSON", "pattern": "Ada Lovelace"},
    {"label": "PERSON", "pattern": [{"LOWER": "grace"}, {"LOWER": "hopper"}]},
    {"label": "GPE", "pattern": "London"},
    {"label": "ORG", "pattern": "Acme Corp"},
]


def _forget_model_choice() -> None:
    ner_module.installed_ner_model.cache_clear()
    ner_module.load_ner_pipeline.cache_clear()


@pytest.fixture()
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(PATTERNS)  # type: ignore[attr-defined]
    path = tmp_path / "tiny_ner"
    nlp.to_disk(path)
    monkeypatch.setenv(ner_module.MODEL_ENV, str(path))
    _forget_model_choice()
    yield path
    _forget_model_choice()


@pytest.fixture()
def no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(ner_module.MODEL_ENV, str(tmp_path / "not-there"))
    _forget_model_choice()
    yield
    _forget_model_choice()


def redact(redactor: Redactor, text: str, mapping: PlaceholderMap | None = None) -> str:
    return redactor.redact(text, mapping if mapping is not None else PlaceholderMap()).text


def test_a_policy_requiring_person_redacts_names_found_by_the_spacy_pipeline(model_dir: Path) -> None:
    assert ner_available()
    redactor = Redactor(RedactionPolicy(entities=["PERSON", "EMAIL_ADDRESS"]))
    text = "Ada Lovelace (ada@example.com) met Grace Hopper; Ada Lovelace took notes in London."
    mapping = PlaceholderMap()
    assert redact(redactor, text, mapping) == (
        "<PERSON_1> (<EMAIL_ADDRESS_1>) met <PERSON_2>; <PERSON_1> took notes in London."
    )
    assert redactor.restore("Thanks <PERSON_2>, from <PERSON_1>", mapping) == "Thanks Grace Hopper, from Ada Lovelace"


def test_locations_and_organisations_map_from_spacy_labels(model_dir: Path) -> None:
    redactor = Redactor(RedactionPolicy(entities=["LOCATION", "ORGANIZATION"]))
    assert redact(redactor, "Acme Corp opened in London") == "<ORGANIZATION_1> opened in <LOCATION_1>"


def test_the_loaded_pipeline_is_spacys_own_with_only_entity_components(model_dir: Path) -> None:
    nlp = ner_module.load_ner_pipeline()
    assert isinstance(nlp, spacy.language.Language)
    assert nlp.pipe_names == ["entity_ruler"]
    assert [(ent.text, ent.label_) for ent in nlp("Grace Hopper in London").ents] == [
        ("Grace Hopper", "PERSON"),
        ("London", "GPE"),
    ]


def test_without_a_model_a_policy_needing_ner_is_refused_with_how_to_install(no_model: None) -> None:
    assert not ner_available()
    policy = RedactionPolicy(entities=["EMAIL_ADDRESS", "PERSON", "LOCATION"])
    with pytest.raises(PolicyNotSupportedError) as caught:
        check_policy_supported(policy)
    message = str(caught.value)
    assert "PERSON needs a spaCy NER model" in message and "LOCATION needs a spaCy NER model" in message
    assert "fedgate[ner]" in message and "spacy download en_core_web_sm" in message
    with pytest.raises(RedactionError):
        Redactor(policy)


def test_without_a_model_the_pattern_types_still_work_offline(no_model: None) -> None:
    redactor = Redactor(RedactionPolicy())
    assert redact(redactor, "Ada Lovelace, ada@example.com") == "Ada Lovelace, <EMAIL_ADDRESS_1>"


def test_a_saved_pipeline_without_an_entity_component_is_not_a_ner_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "no_ner")
    monkeypatch.setenv(ner_module.MODEL_ENV, str(tmp_path / "no_ner"))
    _forget_model_choice()
    try:
        assert not ner_available()
    finally:
        _forget_model_choice()
