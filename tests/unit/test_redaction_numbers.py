"""Numbers: cards of every published range, phone numbers by layout, what is never either, and `on_doubt`."""

from __future__ import annotations

import pytest

from gateway_core.redaction import PlaceholderMap, RedactionPolicy, Redactor
from gateway_core.redaction.cards import is_card_number
from tests.unit.test_redaction import no_network  # noqa: F401 - the socket guard fixture, used below

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def default_redactor() -> Redactor:
    return Redactor(RedactionPolicy())


@pytest.fixture(scope="module")
def doubtful_redactor() -> Redactor:
    return Redactor(RedactionPolicy(on_doubt="redact"))


def redact(redactor: Redactor, text: str) -> str:
    return redactor.redact(text, PlaceholderMap()).text


# --- cards ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        "4556 7375 8689 9855 014",  # Visa, 19 digits in fours
        "4916338506082832009",  # Visa 19, plain
        "213100934637266",  # JCB, 15-digit legacy range 2131
        "3569 9900 1009 5841 5",  # JCB, 17 digits
        "675964982648",  # Maestro UK, 12 digits
        "5018-0000-0000-0009",  # Maestro
        "621234 5678901234569",  # UnionPay 19, written 6-13
        "3782 822463 10005",  # Amex 4-6-5
        "3056 930902 5904",  # Diners Club 14, 4-6-4
        "2221 0012 3412 3450",  # Mastercard 2-series
        "2200 1234 5678 9019",  # Mir
        "9792 1234 5678 9018",  # Troy
        "6011 1234 5678 9012 348",  # Discover 19
        "8600 1234 5678 9012",  # Uzcard
        "4111.1111.1111.1111",  # dotted
    ],
)
def test_cards_of_every_range_and_length_are_found(default_redactor: Redactor, card: str) -> None:
    assert is_card_number("".join(char for char in card if char.isdigit()))
    assert redact(default_redactor, f"my card {card} please") == "my card <CREDIT_CARD_1> please"
    assert redact(default_redactor, f"Paid with {card}.") == "Paid with <CREDIT_CARD_1>."


def test_a_luhn_invalid_number_or_an_unpublished_range_is_not_a_card(default_redactor: Redactor) -> None:
    assert redact(default_redactor, "ref 4111 1111 1111 1112 ok") == "ref 4111 1111 1111 1112 ok"
    assert not is_card_number("0000000000000000")
    assert not is_card_number("7000000000000008")  # Luhn-valid, but 7 is no card network's


def test_barcodes_and_isbns_are_not_cards(default_redactor: Redactor) -> None:
    for text in ("Scan barcode 6358862259062 at the till", "ISBN 9780306406157 is out of print", "EAN 4006381333931"):
        assert redact(default_redactor, text) == text


def test_a_card_followed_by_a_phone_number_leaks_neither(default_redactor: Redactor) -> None:
    out = redact(default_redactor, "card 4556737586899855014 call 555-123-4567 now")
    assert "4556737586899855014" not in out and "555-123-4567" not in out and "123" not in out


# --- phone numbers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reach me at 555.123.4567 today", "Reach me at <PHONE_NUMBER_1> today"),
        ("call 5551234567", "call <PHONE_NUMBER_1>"),
        ("Office (555) 123-4567 x149 after lunch", "Office <PHONE_NUMBER_1> after lunch"),
        ("Desk 555-123-4567 ext. 12 after lunch", "Desk <PHONE_NUMBER_1> after lunch"),
        ("Number: 001-415-555-0132", "Number: <PHONE_NUMBER_1>"),
        ("dial 1-800-555-0199 for help", "dial <PHONE_NUMBER_1> for help"),
        ("mobile 555-0123", "mobile <PHONE_NUMBER_1>"),
        ("Try +44 20 7946 0958 or 0044 20 7946 0018.", "Try <PHONE_NUMBER_1> or <PHONE_NUMBER_2>."),
        ("Berlin office +49 (0)30 901820", "Berlin office <PHONE_NUMBER_1>"),
        ("Leeds 0113 496 0123", "Leeds <PHONE_NUMBER_1>"),
        ("07700 900123 is my mobile", "<PHONE_NUMBER_1> is my mobile"),
        ("Tel. (06) 12-34-56-78", "Tel. <PHONE_NUMBER_1>"),
        ("Desk: (73)/293-9942", "Desk: <PHONE_NUMBER_1>"),
        ("answering at 61 60 34", "answering at <PHONE_NUMBER_1>"),
        ("Phone:\\n555-123-4567\\n", "Phone:\\n<PHONE_NUMBER_1>\\n"),  # escaped line breaks written out
        ("555-123-4567-Office\\,555.123.4568-Fax", "<PHONE_NUMBER_1>-Office\\,<PHONE_NUMBER_2>-Fax"),
    ],
)
def test_phone_numbers_by_layout(default_redactor: Redactor, text: str, expected: str) -> None:
    assert redact(default_redactor, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The meeting moved to 04.06.1987 at noon.",
        "Released on 2008-07-09 10:13:07.530456 by the build bot.",
        "ISBN 0-647-97718-4 is out of print; try ISBN 0-949530-00-X instead.",
        "Mobile data used this month: 238.204 GB of 500 GB.",
        "Release 16.40.228 passed all tests.",
        "We counted 1 234 567 visitors.",
        "Order ORD-2024-004512 shipped; invoice INV-20240612-0042.",
        "The recipe needs 3 eggs, 250 g of flour and 0.5 l of milk.",
        "Coordinates -44.131658, 121.546106 are north of town.",
        "My driver's license number is 9030249190",
        "Screen 3840x2160 at 144 Hz",
    ],
)
def test_numbers_that_are_not_pii_are_left_alone(default_redactor: Redactor, text: str) -> None:
    assert redact(default_redactor, text) == text


# --- IBANs ----------------------------------------------------------------------------------------------------------


def test_lower_case_ibans_are_found(default_redactor: Redactor) -> None:
    assert redact(default_redactor, "my iban is gb82west12345698765432") == "my iban is <IBAN_CODE_1>"
    assert redact(default_redactor, "iban es91 2100 0418 4502 0005 1332 thanks") == "iban <IBAN_CODE_1> thanks"


def test_ibans_of_countries_presidio_lacks_are_found_by_length_and_check_digits(default_redactor: Redactor) -> None:
    assert redact(default_redactor, "My IBAN is IR470565161452539749810908") == "My IBAN is <IBAN_CODE_1>"
    assert redact(default_redactor, "My IBAN is IR470565161452539749810909") == "My IBAN is IR470565161452539749810909"


# --- on_doubt -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my card 4111 1111 1111 1112 was declined", "my card <CREDIT_CARD_1> was declined"),
        ("acct# 00123456789 please", "acct# <IBAN_CODE_1> please"),
        ("wire it to account 12-3456-7890123", "wire it to account <IBAN_CODE_1>"),
        ("her SSN might be 12345678 or so", "her SSN might be <US_SSN_1> or so"),
        ("His social security number is ZZ631706T", "His social security number is <US_SSN_1>"),
        ("Here's my SSN: 291002A5844", "Here's my SSN: <US_SSN_1>"),
    ],
)
def test_on_doubt_redact_replaces_long_numbers_next_to_a_doubt_word(
    default_redactor: Redactor, doubtful_redactor: Redactor, text: str, expected: str
) -> None:
    assert redact(doubtful_redactor, text) == expected
    assert redact(default_redactor, text) == text  # on_doubt: keep (the default) leaves them


@pytest.mark.parametrize(
    "text",
    [
        "My account has 1,250,000 reward points.",
        "The account was opened on 2019-03-04 and reviewed on 04.05.2020.",
        "The card game uses 52 cards and lasts 45 minutes.",
        "Card sales rose 12% to $1,234,567.89 in May.",
        "Alameda de Cardoso, 2 8389-093 Fátima",  # "Cardoso" is not "card"
        "Call me at 3 pm about the 12345 boxes.",
        "Tracking number 1Z999AA10123456784 was scanned at the depot.",
    ],
)
def test_on_doubt_redact_leaves_numbers_that_are_not_in_doubt(doubtful_redactor: Redactor, text: str) -> None:
    assert redact(doubtful_redactor, text) == text


def test_doubt_words_count_only_for_types_the_policy_detects() -> None:
    phones_only = Redactor(RedactionPolicy(entities=["PHONE_NUMBER"], on_doubt="redact"))
    assert redact(phones_only, "my card 4111 1111 1111 1112") == "my card 4111 1111 1111 1112"


def test_on_doubt_is_validated() -> None:
    with pytest.raises(ValueError, match="on_doubt"):
        RedactionPolicy.model_validate({"on_doubt": "maybe"})
