"""presidio-evaluator's public templates, filled the way its PresidioSentenceFaker fills them.

Everything that decides the text comes from the presidio-evaluator wheel (`pip install presidio-evaluator`): its
templates file, its FakeNameGenerator.com records, its organisation and nationality lists, and the formats of its own
Faker providers (phone numbers, ages, addresses), read from its source without importing it (importing it pulls in
pandas and transformers and fetches a hospital list from WikiData). The fill follows its RecordGenerator: one record
per sentence supplies the first value of each field it has, Faker the rest; 5 % of sentences are lower-cased.

Departures, each so that a label means what it says:
- Faker runs in the sample's locale (the evaluator's default is en_US); a locale's `ssn` is not a US SSN, so {{ssn}}
  is always an en_US one, and an {{iban}} that is not a valid IBAN (Faker en_IN writes 21-character GB ones) is
  replaced by a valid one from en_GB.
- {{phone_number}} beyond the record's comes half from the evaluator's PhoneNumberProviderNew formats, half from the
  locale's own Faker formats.
- The evaluator's NationalityProvider.country returns None (a bug); {{country}} is Faker's.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from faker import Faker

from devtools.redaction.samples import LabelledValue, Sample
from gateway_core.redaction.policy import CREDIT_CARD, EMAIL_ADDRESS, IBAN_CODE, IP_ADDRESS, PHONE_NUMBER, US_SSN

# Template fields that hold a value of a type the default policy must find.
ENTITY_OF_FIELD: dict[str, str] = {
    "credit_card_number": CREDIT_CARD,
    "credit_card": CREDIT_CARD,
    "phone_number": PHONE_NUMBER,
    "email": EMAIL_ADDRESS,
    "iban": IBAN_CODE,
    "ip_address": IP_ADDRESS,
    "ssn": US_SSN,
}

LOCALES: tuple[str, ...] = (
    "en_US",
    "en_GB",
    "en_CA",
    "en_AU",
    "en_IE",
    "en_IN",
    "de_DE",
    "de_AT",
    "de_CH",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
    "nl_BE",
    "pt_PT",
    "pt_BR",
    "pl_PL",
    "da_DK",
    "fi_FI",
    "sv_SE",
    "no_NO",
    "cs_CZ",
    "hu_HU",
    "ro_RO",
    "el_GR",
    "tr_TR",
    "uk_UA",
    "ru_RU",
    "he_IL",
    "ja_JP",
    "ko_KR",
    "zh_CN",
    "es_MX",
    "en_NZ",
    "fa_IR",
)

LOWER_CASE_RATIO = 0.05  # PresidioSentenceFaker's documented default
_TOKEN = re.compile(r"\{\{\s*(\w+)(?::\s*\w+?)?\s*\}\}")  # Faker's own template token

# IBAN lengths per country, from the SWIFT IBAN registry (countries Faker writes IBANs for).
IBAN_LENGTHS: dict[str, int] = {
    "AT": 20, "BE": 16, "BR": 29, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18, "FR": 27, "GB": 22,
    "IE": 22, "IT": 27, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "SE": 24, "LU": 20, "AZ": 28, "GR": 27, "HU": 28,
    "RO": 24, "SK": 24, "UA": 29, "TR": 26, "IL": 23, "SA": 24, "AE": 23, "BG": 22, "HR": 21, "LT": 20, "LV": 21,
    "EE": 20, "SI": 19, "IR": 26, "CY": 28, "MT": 31, "IS": 26, "LI": 21, "MC": 27, "SM": 27, "GE": 22, "KZ": 20,
    "BY": 28,
}  # fmt: skip


def iban_is_valid(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# --- what the wheel ships -------------------------------------------------------------------------------------------


@cache
def evaluator_root() -> Path:
    """The installed presidio_evaluator/data_generator directory, found without importing the package."""
    spec = importlib.util.find_spec("presidio_evaluator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("presidio-evaluator is not installed: pip install presidio-evaluator")
    return Path(next(iter(spec.submodule_search_locations))) / "data_generator"


@cache
def evaluator_templates() -> tuple[str, ...]:
    """Its templates, read and pre-processed as PresidioSentenceFaker does (lines stripped, `<x>` -> `{{x}}`)."""
    lines = (evaluator_root() / "raw_data" / "templates.txt").read_text(encoding="utf-8").splitlines()
    templates = []
    for line in lines:
        template = line.strip().replace("<", "{{").replace(">", "}}")
        template = re.sub(r"{{(.*?)}}", lambda match: "{{" + match.group(1).lower() + "}}", template)
        if template:
            templates.append(template)
    return tuple(templates)


def template_fields(template: str) -> list[str]:
    return [match.group(1) for match in _TOKEN.finditer(template)]


def _snake(name: str) -> str:
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", name).lower()


_RECORD_RENAMES = {
    "country": "country_code",
    "state": "state_abbr",
    "country_full": "country",
    "name_set": "nationality",
    "street_address": "street_name",
    "state_full": "state",
    "given_name": "first_name",
    "surname": "last_name",
    "title": "prefix",
    "email_address": "email",
    "telephone_number": "phone_number",
    "telephone_country_code": "country_calling_code",
    "birthday": "date_of_birth",
    "cc_number": "credit_card_number",
    "cc_type": "credit_card_provider",
    "cc_expires": "credit_card_expire",
    "occupation": "job",
    "domain": "domain_name",
    "username": "user_name",
    "zip_code": "zipcode",
}


@cache
def evaluator_records() -> tuple[dict[str, str], ...]:
    """Its FakeNameGenerator.com people, renamed as its load_fake_person_df does; card numbers removed (as there)."""
    path = evaluator_root() / "raw_data" / "FakeNameGenerator.com_3000.csv"
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = []
    for row in rows:
        record = {_RECORD_RENAMES.get(_snake(key), _snake(key)): value for key, value in row.items()}
        record.pop("credit_card_number", None)
        gender = record.get("gender")
        for part in ("first_name", "prefix", "last_name"):
            record[f"{part}_female"] = record[part] if gender == "female" else ""
            record[f"{part}_male"] = record[part] if gender == "male" else ""
        records.append(record)
    return tuple(records)


def _column(filename: str, column: str, delimiter: str = ",") -> tuple[str, ...]:
    with (evaluator_root() / "raw_data" / filename).open(encoding="utf-8-sig", newline="") as handle:
        return tuple(row[column] for row in csv.DictReader(handle, delimiter=delimiter) if row.get(column))


@cache
def evaluator_organizations() -> tuple[str, ...]:
    return _column("companies_and_organizations.csv", "organization", "\t")


@cache
def evaluator_nationalities() -> dict[str, tuple[str, ...]]:
    return {column: _column("nationalities.csv", column) for column in ("nationality", "man", "woman", "plural")}


@cache
def _provider_class_constants() -> dict[tuple[str, str], Any]:
    """Literal class attributes of its Faker providers (e.g. PhoneNumberProviderNew.formats), read from source."""
    source = (evaluator_root() / "faker_extensions" / "providers.py").read_text(encoding="utf-8")
    constants: dict[tuple[str, str], Any] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
                continue
            target = statement.targets[0]
            if not isinstance(target, ast.Name):
                continue
            value = statement.value
            if isinstance(value, ast.Call) and value.args:  # OrderedDict([...]) / OrderedDict((...))
                value = value.args[0]
            try:
                constants[(node.name, target.id)] = ast.literal_eval(value)
            except ValueError:
                continue
    return constants


def evaluator_phone_formats() -> tuple[str, ...]:
    return tuple(_provider_class_constants()[("PhoneNumberProviderNew", "formats")])


def evaluator_age_formats() -> tuple[tuple[str, float], ...]:
    return tuple(_provider_class_constants()[("AgeProvider", "formats")])


def evaluator_address_formats() -> tuple[tuple[str, float], ...]:
    return tuple(_provider_class_constants()[("AddressProviderNew", "address_formats")])


@cache
def evaluator_driver_license_formats() -> tuple[str, ...]:
    text = (evaluator_root() / "raw_data" / "us_driver_license_format.yaml").read_text(encoding="utf-8")
    by_state: dict[str, list[str]] = yaml.safe_load(text)["en"]["faker"]["driving_license"]["usa"]
    return tuple(pattern for patterns in by_state.values() for pattern in patterns)


# --- filling -------------------------------------------------------------------------------------------------------

_EARLIEST = datetime(1950, 1, 1)
_LATEST = datetime(2030, 12, 31)
_MOMENT_FIELDS: dict[str, Callable[[datetime], str]] = {
    "date_time": str,
    "date_of_birth": lambda moment: str(moment.date()),
    "day_of_week": lambda moment: moment.strftime("%A"),
    "year": lambda moment: str(moment.year),
    "date": lambda moment: str(moment.date()),
    "time": lambda moment: moment.strftime("%H:%M:%S"),
}


@dataclass
class EvaluatorFiller:
    """Fills evaluator templates; every random choice comes from `rng`, so a seed fixes the corpus."""

    rng: random.Random
    fakers: dict[str, Faker] = field(default_factory=dict)

    def faker(self, locale: str) -> Faker:
        if locale not in self.fakers:
            fake = Faker(locale)
            fake.seed_instance(self.rng.randrange(2**32))
            self.fakers[locale] = fake
        return self.fakers[locale]

    def fill(
        self,
        template: str,
        locale: str,
        overrides: dict[str, Callable[[], str]] | None = None,
        lower_case_ratio: float = LOWER_CASE_RATIO,
    ) -> Sample:
        """One sentence. `overrides` replaces the generator of a field (e.g. phone numbers from a format list)."""
        record = dict(self.rng.choice(evaluator_records()))
        record["person"] = record["name"] = self._full_name(record)
        pieces: list[str] = []
        labels: list[LabelledValue] = []
        position = 0
        cursor = 0
        for match in _TOKEN.finditer(template):
            literal = template[cursor : match.start()]
            pieces.append(literal)
            position += len(literal)
            name = match.group(1)
            if overrides and name in overrides:
                value = overrides[name]()
            elif record.get(name):
                value = record.pop(name)
            else:
                value = self.value(name, locale)
            pieces.append(value)
            entity = ENTITY_OF_FIELD.get(name)
            if entity is not None and value.strip():
                labels.append(LabelledValue(entity, position, position + len(value), value))
            position += len(value)
            cursor = match.end()
        pieces.append(template[cursor:])
        text = "".join(pieces)
        if self.rng.random() < lower_case_ratio:
            text = text.lower()
            labels = [LabelledValue(lv.entity, lv.start, lv.end, lv.value.lower()) for lv in labels]
        return Sample(text, tuple(labels), "evaluator-templates")

    def moment(self, locale: str = "en_US") -> datetime:
        """A random date and time between fixed bounds (Faker's own date fields depend on today's date)."""
        return self.faker(locale).date_time_between(start_date=_EARLIEST, end_date=_LATEST)

    def _full_name(self, record: dict[str, str]) -> str:
        if self.rng.random() > 0.2:
            return f"{record['first_name']} {record['last_name']}"
        space = " " if self.rng.random() > 0.5 else ". "
        return f"{record['first_name']} {record['middle_initial']}{space}{record['last_name']}"

    def value(self, name: str, locale: str) -> str:
        """A Faker value for one template field, with the evaluator's providers where it has its own."""
        fake = self.faker(locale)
        us = self.faker("en_US")
        rng = self.rng
        if name in ("credit_card_number", "credit_card"):
            return str(fake.credit_card_number())
        if name == "phone_number":
            if rng.random() < 0.5:
                return str(fake.numerify(rng.choice(evaluator_phone_formats())))
            return str(fake.phone_number())
        if name == "ssn":
            return str(us.ssn())
        if name == "iban":
            iban = str(fake.iban())
            return iban if iban_is_valid(iban) else str(self.faker("en_GB").iban())
        if name == "ip_address":
            return str(fake.ipv4() if rng.random() < 0.8 else fake.ipv6())
        if name in ("organization", "company"):
            return rng.choice(evaluator_organizations())
        if name in ("nationality", "nation_man", "nation_woman", "nation_plural"):
            column = {"nation_man": "man", "nation_woman": "woman", "nation_plural": "plural"}.get(name, name)
            return rng.choice(evaluator_nationalities()[column])
        if name == "age":
            formats, weights = zip(*evaluator_age_formats(), strict=True)
            return str(fake.numerify(rng.choices(formats, weights)[0]))
        if name == "address" and rng.random() < 0.5:
            formats, weights = zip(*evaluator_address_formats(), strict=True)
            return str(us.parse(rng.choices(formats, weights)[0]))
        if name == "us_driver_license":
            return str(fake.bothify(rng.choice(evaluator_driver_license_formats())))
        if name in _MOMENT_FIELDS:
            return _MOMENT_FIELDS[name](self.moment(locale))
        for source in (fake, us):
            try:
                return str(getattr(source, name)())
            except AttributeError:
                continue
        raise KeyError(f"no Faker provider for template field {name!r}")


def templates_with(fields: set[str]) -> tuple[str, ...]:
    """Evaluator templates that contain at least one of `fields`."""
    return tuple(t for t in evaluator_templates() if fields & set(template_fields(t)))


def templates_without(fields: set[str]) -> tuple[str, ...]:
    """Evaluator templates that contain none of `fields`."""
    return tuple(t for t in evaluator_templates() if not fields & set(template_fields(t)))
