"""Redaction behaviour: placeholders, operators, restore, adjacency and overlaps, custom rules, fail-closed, offline."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from gateway_core.config import DEMO_CONFIG, load_config
from gateway_core.redaction import (
    DEFAULT_ENTITIES,
    CustomRecognizer,
    PlaceholderMap,
    PolicyNotSupportedError,
    RedactionError,
    RedactionPolicy,
    Redactor,
    check_policy_supported,
    ner_available,
)
from gateway_core.redaction import ner as ner_module
from gateway_core.redaction.phone import PhoneDetector
from gateway_core.redaction.spans import Candidate, Span, resolve_overlaps

SALT = "tenant-salt-0123456789abcdef"


@dataclass
class NetworkAttempts:
    targets: list[str]


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkAttempts]:
    """Fails the test on any connect or DNS lookup to a non-loopback address, even if the library swallows the error."""
    attempts = NetworkAttempts([])
    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def check(family: int, address: object) -> None:
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            host = str(address[0])
            if not _is_loopback(host):
                attempts.targets.append(host)
                raise ConnectionRefusedError(f"test guard: network access to {host} is not allowed")

    def guarded_connect(self: socket.socket, address: object) -> None:
        check(self.family, address)
        real_connect(self, address)  # type: ignore[arg-type]

    def guarded_connect_ex(self: socket.socket, address: object) -> int:
        check(self.family, address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host is not None and not _is_loopback(str(host)):
            attempts.targets.append(str(host))
            raise socket.gaierror(f"test guard: DNS lookup of {host} is not allowed")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert attempts.targets == [], f"network access attempted: {attempts.targets}"


@pytest.fixture(scope="module")
def default_redactor() -> Redactor:
    return Redactor(RedactionPolicy())


def redact(redactor: Redactor, text: str, mapping: PlaceholderMap | None = None, salt: str = SALT) -> str:
    return redactor.redact(text, mapping if mapping is not None else PlaceholderMap(), salt=salt).text


# --- placeholders and the map ---------------------------------------------------------------------------------------


def test_placeholders_are_numbered_per_type_and_stable_across_the_messages_of_a_job(default_redactor: Redactor) -> None:
    job = PlaceholderMap()
    first = redact(default_redactor, "Mail ann@example.com or bob@example.org, card 4111 1111 1111 1111.", job)
    second = redact(default_redactor, "bob@example.org again, then carl@example.net; card 4111 1111 1111 1111", job)
    assert first == "Mail <EMAIL_ADDRESS_1> or <EMAIL_ADDRESS_2>, card <CREDIT_CARD_1>."
    assert second == "<EMAIL_ADDRESS_2> again, then <EMAIL_ADDRESS_3>; card <CREDIT_CARD_1>"
    assert job.counters == {"EMAIL_ADDRESS": 3, "CREDIT_CARD": 1}


def test_same_value_gets_same_placeholder_and_counts_are_per_detection(default_redactor: Redactor) -> None:
    result = default_redactor.redact("ann@example.com, ann@example.com and 10.0.0.7", PlaceholderMap())
    assert result.text == "<EMAIL_ADDRESS_1>, <EMAIL_ADDRESS_1> and <IP_ADDRESS_1>"
    assert result.counts == {"EMAIL_ADDRESS": 2, "IP_ADDRESS": 1}


def test_entities_carry_type_input_offsets_and_placeholder(default_redactor: Redactor) -> None:
    text = "From 192.168.1.20: write to ann@example.com"
    result = default_redactor.redact(text, PlaceholderMap())
    assert [entity.to_dict() for entity in result.entities] == [
        {"type": "IP_ADDRESS", "start": 5, "end": 17, "placeholder": "<IP_ADDRESS_1>"},
        {"type": "EMAIL_ADDRESS", "start": 28, "end": 43, "placeholder": "<EMAIL_ADDRESS_1>"},
    ]
    assert text[5:17] == "192.168.1.20" and text[28:43] == "ann@example.com"
    assert json.loads(json.dumps(result.to_dict()))["entities"][0]["type"] == "IP_ADDRESS"


def test_mapping_round_trips_through_json_and_keeps_numbering(default_redactor: Redactor) -> None:
    job = PlaceholderMap()
    redact(default_redactor, "ann@example.com, +44 20 7946 0958, DE89 3704 0044 0532 0130 00", job)
    restored = PlaceholderMap.from_json(job.to_json())
    assert restored == job and restored.counters == job.counters
    assert redact(default_redactor, "zoe@example.com and ann@example.com", restored) == (
        "<EMAIL_ADDRESS_2> and <EMAIL_ADDRESS_1>"
    )


def test_damaged_mapping_json_is_refused_without_echoing_it() -> None:
    with pytest.raises(RedactionError) as caught:
        PlaceholderMap.from_json(
            '{"version": 1, "entries": [{"placeholder": "<X_1>", "entity": "Y", "value": "ann@x"}]}'
        )
    assert "ann@x" not in str(caught.value)
    with pytest.raises(RedactionError):
        PlaceholderMap.from_json("not json")


def test_mapping_repr_never_shows_values(default_redactor: Redactor) -> None:
    job = PlaceholderMap()
    redact(default_redactor, "ann@example.com", job)
    assert "ann@example.com" not in repr(job)


# --- operators ------------------------------------------------------------------------------------------------------


def test_mask_keeps_the_last_four_characters() -> None:
    redactor = Redactor(RedactionPolicy(operators={"CREDIT_CARD": "mask", "PHONE_NUMBER": "mask"}))
    result = redactor.redact("card 5555-5555-5555-4444 phone +44 20 7946 0958", PlaceholderMap())
    assert result.text == "card ***************4444 phone ************0958"
    assert [entity.placeholder for entity in result.entities] == ["***************4444", "************0958"]


def test_mask_never_reveals_most_of_a_short_value() -> None:
    policy = RedactionPolicy(entities=[], deny_list={"CODENAME": ["Aurora"]}, operators={"CODENAME": "mask"})
    assert redact(Redactor(policy), "Project Aurora") == "Project *****a"


def test_hash_is_salted_per_tenant_stable_and_not_restorable() -> None:
    redactor = Redactor(RedactionPolicy(operators={"EMAIL_ADDRESS": "hash"}))
    job = PlaceholderMap()
    first = redact(redactor, "ann@example.com", job, salt=SALT)
    assert first.startswith("<EMAIL_ADDRESS#") and len(first) == len("<EMAIL_ADDRESS#>") + 16
    assert redact(redactor, "ann@example.com", salt=SALT) == first
    assert redact(redactor, "ann@example.com", salt=SALT + "-other-tenant") != first
    assert len(job) == 0 and redactor.restore(first, job) == first


def test_hash_without_a_long_enough_salt_fails_closed() -> None:
    redactor = Redactor(RedactionPolicy(operators={"EMAIL_ADDRESS": "hash"}))
    with pytest.raises(RedactionError, match="salt"):
        redactor.redact("ann@example.com", PlaceholderMap(), salt="short")


def test_redact_removes_and_keep_leaves_but_still_counts() -> None:
    redactor = Redactor(RedactionPolicy(operators={"EMAIL_ADDRESS": "redact", "IP_ADDRESS": "keep"}))
    result = redactor.redact("mail ann@example.com from 10.1.2.3", PlaceholderMap())
    assert result.text == "mail  from 10.1.2.3"
    assert result.counts == {"EMAIL_ADDRESS": 1, "IP_ADDRESS": 1}
    assert [entity.placeholder for entity in result.entities] == ["", None]


def test_default_operator_applies_to_unlisted_types() -> None:
    redactor = Redactor(RedactionPolicy(default_operator="redact", operators={"IP_ADDRESS": "placeholder"}))
    assert redact(redactor, "ann@example.com 10.1.2.3") == " <IP_ADDRESS_1>"


def test_disabled_policy_changes_nothing() -> None:
    text = "ann@example.com 4111 1111 1111 1111 +44 20 7946 0958"
    result = Redactor(RedactionPolicy.disabled()).redact(text, PlaceholderMap())
    assert result.text == text and result.entities == [] and result.counts == {}


# --- restore ---------------------------------------------------------------------------------------------------------


def test_restore_puts_originals_back_in_partner_output(default_redactor: Redactor) -> None:
    job = PlaceholderMap()
    redact(default_redactor, "Email ann@example.com and call +1 415 555 2671", job)
    output = "I emailed <EMAIL_ADDRESS_1>; <PHONE_NUMBER_1> did not answer. <EMAIL_ADDRESS_9> is unknown."
    assert default_redactor.restore(output, job) == (
        "I emailed ann@example.com; +1 415 555 2671 did not answer. <EMAIL_ADDRESS_9> is unknown."
    )


def test_restore_only_for_placeholder_types_and_only_when_the_policy_allows_it() -> None:
    job = PlaceholderMap()
    placeholder_redactor = Redactor(RedactionPolicy())
    redact(placeholder_redactor, "ann@example.com 10.1.2.3", job)
    output = "<EMAIL_ADDRESS_1> <IP_ADDRESS_1>"
    partial = Redactor(RedactionPolicy(operators={"IP_ADDRESS": "mask"}))
    assert partial.restore(output, job) == "ann@example.com <IP_ADDRESS_1>"
    assert Redactor(RedactionPolicy(restore=False)).restore(output, job) == output


# --- adjacency and overlaps: nothing may leak -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ann@example.com bob@example.org", "<EMAIL_ADDRESS_1> <EMAIL_ADDRESS_2>"),
        ("ann@example.com,bob@example.org", "<EMAIL_ADDRESS_1>,<EMAIL_ADDRESS_2>"),
        ("ann@example.com\nbob@example.org", "<EMAIL_ADDRESS_1>\n<EMAIL_ADDRESS_2>"),
        ("<ann@example.com><bob@example.org>", "<<EMAIL_ADDRESS_1>><<EMAIL_ADDRESS_2>>"),
    ],
)
def test_adjacent_emails_get_separate_placeholders(default_redactor: Redactor, text: str, expected: str) -> None:
    job = PlaceholderMap()
    assert redact(default_redactor, text, job) == expected
    assert default_redactor.restore(expected, job) == text


@pytest.mark.parametrize(
    "text",
    [
        "Call +1 415 555 2671 +44 20 7946 0958 today",
        "Call (415) 555-2671 (212) 555-0123 today",
        "Phones: 020 7946 0958 030 12345678",
        "Call +33 1 23 45 67 89 020 7946 0958",
    ],
)
def test_adjacent_phone_numbers_are_both_replaced(default_redactor: Redactor, text: str) -> None:
    job = PlaceholderMap()
    result = default_redactor.redact(text, job)
    assert result.counts == {"PHONE_NUMBER": 2}
    assert "<PHONE_NUMBER_1> <PHONE_NUMBER_2>" in result.text
    assert default_redactor.restore(result.text, job) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed 4155552671 rows", "seed 4155552671 rows"),  # a bare digit run needs a context word ...
        ("phone 4155552671", "phone <PHONE_NUMBER_1>"),  # ... and is a phone number with one
        ("Phone:02079460958", "Phone:<PHONE_NUMBER_1>"),
        ("call about ORD-2024-004512", "call about ORD-2024-004512"),  # glued into an identifier: never
        ("Coordinates 77.2326, 164.7825", "Coordinates 77.2326, 164.7825"),
        ("on 1984-02-29 at 10:22:01", "on 1984-02-29 at 10:22:01"),
        ("office (415) 555-2671", "office <PHONE_NUMBER_1>"),
        ("+44 20 7946 0958", "<PHONE_NUMBER_1>"),
    ],
)
def test_identifier_like_numbers_need_context_to_be_phone_numbers(
    default_redactor: Redactor, text: str, expected: str
) -> None:
    assert redact(default_redactor, text) == expected


def test_phone_extensions_are_part_of_the_number(default_redactor: Redactor) -> None:
    assert redact(default_redactor, "call +1 430-633-8770 ext. 941 or (0161) 4960066x123") == (
        "call <PHONE_NUMBER_1> or <PHONE_NUMBER_2>"
    )


def test_card_followed_by_phone_leaks_neither(default_redactor: Redactor) -> None:
    text = "Card 4111 1111 1111 1111 +49 30 1234567 callback"
    assert redact(default_redactor, text) == "Card <CREDIT_CARD_1> <PHONE_NUMBER_1> callback"


def test_iban_with_digit_runs_is_one_iban_not_pieces(default_redactor: Redactor) -> None:
    text = "IBAN DE89 3704 0044 0532 0130 00 and GB82 WEST 1234 5698 7654 32."
    result = default_redactor.redact(text, PlaceholderMap())
    assert result.text == "IBAN <IBAN_CODE_1> and <IBAN_CODE_2>."
    assert result.counts == {"IBAN_CODE": 2}


def test_grouped_iban_followed_by_a_word_is_found(default_redactor: Redactor) -> None:
    # Presidio's default registry runs the IBAN pattern case-insensitively, so "... 6756 replaces" swallows letters
    # and the IBAN is lost; we keep the recognizer's own (case-sensitive) flags.
    assert redact(default_redactor, "account ES82 8366 0048 3640 5601 6756 replaces it") == (
        "account <IBAN_CODE_1> replaces it"
    )


def test_overlaps_resolve_to_the_union_typed_by_the_widest_span() -> None:
    card = Candidate("CREDIT_CARD", 5, 24, 1.0)
    phone = Candidate("PHONE_NUMBER", 20, 36, 0.4)
    assert resolve_overlaps([phone, card]) == [Span("CREDIT_CARD", 5, 36)]


def test_overlap_ties_go_to_the_higher_score_and_touching_spans_stay_apart() -> None:
    weak = Candidate("US_SSN", 0, 11, 0.5)
    strong = Candidate("PHONE_NUMBER", 0, 11, 0.7)
    touching = Candidate("EMAIL_ADDRESS", 11, 20, 1.0)
    assert resolve_overlaps([weak, strong, touching]) == [Span("PHONE_NUMBER", 0, 11), Span("EMAIL_ADDRESS", 11, 20)]


def test_chained_overlaps_are_covered_completely() -> None:
    spans = resolve_overlaps([Candidate("A", 0, 10, 0.5), Candidate("B", 8, 30, 0.5), Candidate("C", 25, 40, 0.9)])
    assert spans == [Span("B", 0, 40)]


def test_overlapping_custom_and_builtin_matches_leave_no_character_behind() -> None:
    policy = RedactionPolicy(
        custom_recognizers=[CustomRecognizer(name="ticket", entity="TICKET", patterns=[r"T-\d{4} 4111"], score=0.9)]
    )
    text = "see T-2024 4111 1111 1111 1111 now"
    result = Redactor(policy).redact(text, PlaceholderMap())
    assert result.text == "see <CREDIT_CARD_1> now"  # the union of both spans, typed by the wider one
    assert result.entities[0].start == 4 and result.entities[0].end == len(text) - 4


# --- custom recognizers and deny-lists -------------------------------------------------------------------------------


def _account_policy(validator: str | None, score: float) -> RedactionPolicy:
    recognizer = CustomRecognizer(
        name="internal account",
        entity="ACCOUNT_ID",
        patterns=[r"\bACC-\d{8}\b"],
        context=["account", "acct"],
        score=score,
        validator=validator,  # type: ignore[arg-type]
    )
    return RedactionPolicy(entities=[], custom_recognizers=[recognizer])


def test_custom_recognizer_below_threshold_needs_a_context_word() -> None:
    redactor = Redactor(_account_policy(validator=None, score=0.2))
    assert redact(redactor, "ref ACC-12345678 attached") == "ref ACC-12345678 attached"
    assert redact(redactor, "the account ACC-12345678 is closed") == "the account <ACCOUNT_ID_1> is closed"


def test_custom_recognizer_validator_drops_bad_checksums_and_trusts_good_ones() -> None:
    redactor = Redactor(_account_policy(validator="luhn", score=0.2))
    assert redact(redactor, "account ACC-12345678") == "account ACC-12345678"  # Luhn fails, context cannot save it
    assert redact(redactor, "ref ACC-12345674") == "ref <ACCOUNT_ID_1>"  # Luhn passes: scored 1.0 without context


def test_custom_recognizer_iban_validator() -> None:
    recognizer = CustomRecognizer(
        name="lower-case iban", entity="BANK", patterns=[r"\bde\d{2}(?: ?\d{4}){4} ?\d{2}\b"], validator="iban"
    )
    redactor = Redactor(RedactionPolicy(entities=[], custom_recognizers=[recognizer]))
    assert redact(redactor, "pay de89 3704 0044 0532 0130 00") == "pay <BANK_1>"
    assert redact(redactor, "pay de00 3704 0044 0532 0130 00") == "pay de00 3704 0044 0532 0130 00"


def test_deny_list_is_whole_word_and_case_insensitive() -> None:
    policy = RedactionPolicy(entities=[], deny_list={"CODENAME": ["Project Aurora", "Borealis"]})
    redactor = Redactor(policy)
    assert redact(redactor, "project aurora ships; BOREALIS later; Borealisation no") == (
        "<CODENAME_1> ships; <CODENAME_2> later; Borealisation no"
    )


# --- fail closed ----------------------------------------------------------------------------------------------------


def test_detection_failure_raises_redaction_error_without_pii(monkeypatch: pytest.MonkeyPatch) -> None:
    redactor = Redactor(RedactionPolicy())

    def explode(self: PhoneDetector, text: str, covered: object = ()) -> list[Candidate]:
        raise RuntimeError(f"boom while reading {text}")

    monkeypatch.setattr(PhoneDetector, "find", explode)
    with pytest.raises(RedactionError) as caught:
        redactor.redact("secret ann@example.com +44 20 7946 0958", PlaceholderMap())
    assert "detection failed" in str(caught.value)
    assert "ann@example.com" not in str(caught.value) and caught.value.__cause__ is None


def test_anonymization_failure_raises_redaction_error(monkeypatch: pytest.MonkeyPatch) -> None:
    redactor = Redactor(RedactionPolicy())

    def explode(self: PlaceholderMap, entity: str, value: str) -> str:
        raise KeyError(value)

    monkeypatch.setattr(PlaceholderMap, "placeholder_for", explode)
    with pytest.raises(RedactionError) as caught:
        redactor.redact("secret ann@example.com", PlaceholderMap())
    assert "anonymization failed" in str(caught.value) and "ann@example.com" not in str(caught.value)


def test_non_text_input_fails_closed(default_redactor: Redactor) -> None:
    with pytest.raises(RedactionError):
        default_redactor.redact(b"ann@example.com", PlaceholderMap())  # type: ignore[arg-type]


# --- policy model and support checks ---------------------------------------------------------------------------------


def test_ner_type_covered_by_a_deny_list_needs_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ner_module, "ner_available", lambda: False)
    policy = RedactionPolicy(entities=["PERSON"], deny_list={"PERSON": ["Ada Lovelace"]})
    check_policy_supported(policy)
    assert redact(Redactor(policy), "ask Ada Lovelace") == "ask <PERSON_1>"


def test_unknown_entity_type_is_refused_with_what_to_do() -> None:
    with pytest.raises(PolicyNotSupportedError, match="no recognizer for EMPLOYEE_ID: add a custom_recognizers"):
        check_policy_supported(RedactionPolicy(entities=["EMPLOYEE_ID"]))


def test_the_demo_partners_redact_on_doubt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_SIMULATOR_URL", raising=False)
    config = load_config(DEMO_CONFIG)
    assert {name: partner.policy.on_doubt for name, partner in config.partners.items()} == {
        "sim-openai": "redact",
        "sim-anthropic": "redact",
    }
    assert config.partner("sim-openai").policy.entities == list(DEFAULT_ENTITIES)


def test_ner_available_reports_a_bool_and_downloads_nothing() -> None:
    assert isinstance(ner_available(), bool)


def test_policy_rejects_unknown_fields_bad_regexes_and_operators_for_undetected_types() -> None:
    with pytest.raises(ValidationError):
        RedactionPolicy.model_validate({"entites": ["EMAIL_ADDRESS"]})
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        CustomRecognizer(name="x", entity="X", patterns=["(unclosed"])
    with pytest.raises(ValidationError, match="does not detect"):
        RedactionPolicy(entities=["EMAIL_ADDRESS"], operators={"CREDIT_CARD": "mask"})
    with pytest.raises(ValidationError):
        RedactionPolicy(operators={"EMAIL_ADDRESS": "encrypt"})  # type: ignore[dict-item]


def test_policy_loads_from_yaml_shaped_config() -> None:
    policy = RedactionPolicy.model_validate(
        {
            "entities": ["EMAIL_ADDRESS", "CREDIT_CARD", "URL"],
            "operators": {"CREDIT_CARD": "mask", "URL": "redact"},
            "custom_recognizers": [{"name": "emp", "entity": "EMPLOYEE_ID", "patterns": [r"\bE\d{6}\b"]}],
            "deny_list": {"CODENAME": ["Aurora"]},
            "retention_s": 0,
        }
    )
    redactor = Redactor.for_policy(policy)
    assert redactor is Redactor.for_policy(policy)
    assert redact(redactor, "E123456 on Aurora: see https://intranet.example.com/x and card 4111111111111111") == (
        "<EMPLOYEE_ID_1> on <CODENAME_1>: see  and card ************1111"
    )


# --- offline and concurrency -------------------------------------------------------------------------------------


def test_the_network_guard_catches_connections(no_network: NetworkAttempts) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("203.0.113.7", 80), timeout=0.2)
    assert no_network.targets == ["203.0.113.7"]
    no_network.targets.clear()


def test_redaction_runs_offline_including_email_domain_checks() -> None:
    # Building and using a Redactor under the guard: tldextract must use its bundled snapshot, spaCy is not loaded.
    redactor = Redactor(RedactionPolicy(entities=["EMAIL_ADDRESS", "PHONE_NUMBER"]))
    assert redact(redactor, "ann@sub.example.co.uk and icon@2x.png") == "<EMAIL_ADDRESS_1> and icon@2x.png"


def test_one_redactor_serves_many_threads(default_redactor: Redactor) -> None:
    texts = [f"user{i}@example.com called +44 20 7946 09{i:02d} from 10.0.{i}.1" for i in range(40)]
    expected = [redact(default_redactor, text) for text in texts]
    results: dict[int, str] = {}

    def work(index: int) -> None:
        results[index] = redact(default_redactor, texts[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(texts))] == expected
