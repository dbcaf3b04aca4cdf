"""The independent corpus: text the redaction engine was not written against, the headline measure of its recall.

Three labelled sets, each in presidio-evaluator's public templates (devtools/redaction/evaluator_templates.py):
- "evaluator-templates": its templates that hold a card, phone, email, IBAN, IP or SSN field, filled as its
  generator fills them, in one of many Faker locales per sentence;
- "card-networks": its card templates holding cards of every issuer range and length the networks publish
  (devtools/redaction/card_numbers.py), Luhn-valid, plain or grouped;
- "phone-formats": its phone templates holding numbers in the formats people write, fiction ranges and extensions
  included (devtools/redaction/phone_formats.py).
And PII-free text: its templates with none of those fields (names, addresses, dates, ages), and sentences dense with
numbers that are not PII (dates, times, prices, quantities, versions, ISBNs, coordinates) written with Faker.

Everything is fixed by a seed; the benchmark and the tests use different seeds, and any seed is as good as another.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from devtools.redaction.card_numbers import every_card
from devtools.redaction.evaluator_templates import (
    ENTITY_OF_FIELD,
    LOCALES,
    EvaluatorFiller,
    templates_with,
    templates_without,
)
from devtools.redaction.phone_formats import every_phone_format, written_phone
from devtools.redaction.samples import Sample, join_samples

DEFAULT_SEED = 7_100_417

_CARD_FIELDS = {"credit_card_number", "credit_card"}
_PHONE_FIELDS = {"phone_number"}
_FIELDS_BY_TYPE: dict[str, set[str]] = {
    entity: {field for field, field_entity in ENTITY_OF_FIELD.items() if field_entity == entity}
    for entity in set(ENTITY_OF_FIELD.values())
}

# Sentences with numbers that are not PII, some next to words that also sit near PII ("call", "account", "card").
_NUMBER_SENTENCES: tuple[str, ...] = (
    "Your order of {quantity} units ships on {date}; the total is {price}.",
    "Version {version} was released on {date_time} and fixes {count} bugs.",
    "The meeting is at {time} on {day_of_week}, {date}.",
    "ISBN {isbn13} is out of print; try ISBN {isbn10} instead.",
    "Scan barcode {ean13} or the short code {ean8} at the till.",
    "The invoice total is {price} (VAT {percent}%), due on {date}.",
    "Call me at {hour} tomorrow about the {count} boxes.",
    "My account has {big_number} reward points and {count} vouchers.",
    "The card game uses {small} cards per player and lasts {count} minutes.",
    "Please fax the {small} pages before {time}.",
    "Build {build} of release {version} passed {count} tests in {float} s.",
    "It was {float} degrees at {time} with {percent}% humidity.",
    "Room {building_number}, floor {small}; the parking spot is {small}{letter}.",
    "Flight {flight} departs at {time} from gate {gate} on {date}.",
    "The site is at {latitude}, {longitude}, about {float} km north of town.",
    "The census counted {big_number} people in {year}, up {percent}% since {year}.",
    "File {uuid} is {count} bytes; its digest starts {sha_short}.",
    "Final score {small}-{small} after {count} minutes of play.",
    "Timestamp {iso8601}: job {count} finished in {float} ms.",
    "Set the pool to {small} workers and the timeout to {count} ms on port {port}.",
    "The recipe needs {small} eggs, {count} g of flour and {float} l of milk.",
    "Our Q{quarter} revenue was {price}, {percent}% above Q{quarter} {year}.",
    "Dial-in opens at {time}; the conference runs {date} to {date}.",
    "Mobile data used this month: {float} GB of {count} GB.",
    "The account was opened in {year} and reviewed on {date}.",
    "Card sales rose {percent}% to {price} in {month} {year}.",
)

_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%B %d, %Y")


class IndependentCorpus:
    """Generates the sets above from one seed."""

    def __init__(self, seed: int = DEFAULT_SEED) -> None:
        self.rng = random.Random(seed)
        self.filler = EvaluatorFiller(self.rng)
        self._templates_by_type = {entity: templates_with(fields) for entity, fields in _FIELDS_BY_TYPE.items()}
        self._card_templates = templates_with(_CARD_FIELDS)
        self._phone_templates = templates_with(_PHONE_FIELDS)
        self._free_templates = templates_without(set(ENTITY_OF_FIELD))

    def _locale(self) -> str:
        return self.rng.choice(LOCALES)

    def evaluator_samples(self, count: int) -> list[Sample]:
        """Evaluator templates filled as its generator fills them. An entity type is drawn first, then a template
        holding it, so that each type is measured on as many values (only 2 of its ~200 templates hold an SSN)."""
        samples = []
        for _ in range(count):
            templates = self._templates_by_type[self.rng.choice(sorted(self._templates_by_type))]
            samples.append(self.filler.fill(self.rng.choice(templates), self._locale()))
        return samples

    def card_samples(self, count: int) -> list[Sample]:
        """Cards of every network and length in turn (the whole table at least once when count allows)."""
        cards = every_card(self.rng)
        self.rng.shuffle(cards)
        supply = _cycle([number for _, number in cards], self.rng)
        overrides: dict[str, Callable[[], str]] = {field: lambda: next(supply) for field in _CARD_FIELDS}
        samples = []
        for _ in range(count):
            sample = self.filler.fill(self.rng.choice(self._card_templates), self._locale(), overrides)
            samples.append(_source(sample, "card-networks"))
        return samples

    def phone_samples(self, count: int) -> list[Sample]:
        """Every listed phone format once, then random ones from the same formats."""
        formats = every_phone_format(self.rng)
        self.rng.shuffle(formats)
        supply = iter(formats)

        def phone() -> str:
            return next(supply, None) or written_phone(self.rng)

        overrides: dict[str, Callable[[], str]] = {"phone_number": phone}
        samples = []
        for _ in range(count):
            sample = self.filler.fill(self.rng.choice(self._phone_templates), self._locale(), overrides)
            samples.append(_source(sample, "phone-formats"))
        return samples

    def pii_samples(self, count: int) -> list[Sample]:
        """Half evaluator templates as its generator fills them, a quarter cards, a quarter phone formats."""
        cards = count // 4
        phones = count // 4
        samples = self.evaluator_samples(count - cards - phones) + self.card_samples(cards)
        samples += self.phone_samples(phones)
        self.rng.shuffle(samples)
        return samples

    def pii_free_samples(self, count: int) -> list[Sample]:
        """Half evaluator templates with no field of the required types, half number-heavy sentences."""
        samples = []
        for index in range(count):
            if index % 2:
                sample = self.filler.fill(self.rng.choice(self._free_templates), self._locale())
            else:
                sample = Sample(self._number_sentence(), (), "number-sentences")
            samples.append(Sample(sample.text, (), sample.source))
        return samples

    def prompts(self, count: int, target_chars: int = 1024, pii_share: float = 0.35) -> list[Sample]:
        """~1 KB prompts mixing PII sentences with PII-free ones, lines joined by spaces or new lines."""
        pii = iter(self.pii_samples(count * 20))
        free = iter(self.pii_free_samples(count * 30))

        def sentences() -> Iterator[Sample]:
            while True:
                yield next(pii) if self.rng.random() < pii_share else next(free)

        return [join_samples(sentences(), target_chars, self.rng.choice((" ", "\n"))) for _ in range(count)]

    def _number_sentence(self) -> str:
        template = self.rng.choice(_NUMBER_SENTENCES)
        fake = self.filler.faker("en_US")
        rng = self.rng
        moment = self.filler.moment
        producers: dict[str, Callable[[], str]] = {
            "quantity": lambda: str(rng.choice([rng.randint(1, 99), rng.randint(100, 99999)])),
            "date": lambda: moment().strftime(rng.choice(_DATE_FORMATS)),
            "date_time": lambda: str(moment()),
            "time": lambda: moment().strftime(rng.choice(["%H:%M", "%H:%M:%S", "%I:%M %p"])),
            "price": lambda: str(fake.pricetag()),
            "version": lambda: f"{rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 300)}",
            "count": lambda: str(rng.randint(2, 99999)),
            "day_of_week": lambda: moment().strftime("%A"),
            "isbn13": lambda: str(fake.isbn13()),
            "isbn10": lambda: str(fake.isbn10()),
            "ean13": lambda: str(fake.ean13()),
            "ean8": lambda: str(fake.ean8()),
            "percent": lambda: str(rng.randint(1, 99)),
            "hour": lambda: rng.choice([f"{rng.randint(1, 12)} pm", f"{rng.randint(1, 12)}:30", "noon"]),
            "big_number": lambda: f"{rng.randint(10_000, 99_999_999):,}",
            "small": lambda: str(rng.randint(1, 9)),
            "build": lambda: f"{moment().strftime('%Y%m%d')}.{rng.randint(1, 99)}",
            "float": lambda: f"{rng.uniform(0.1, 999):.{rng.randint(1, 3)}f}",
            "building_number": lambda: str(fake.building_number()),
            "letter": lambda: rng.choice("ABCDEFGH"),
            "flight": lambda: f"{rng.choice(['LH', 'BA', 'AF', 'UA', 'KL'])}{rng.randint(1, 9999)}",
            "gate": lambda: f"{rng.choice('ABCDE')}{rng.randint(1, 60)}",
            "latitude": lambda: str(fake.latitude()),
            "longitude": lambda: str(fake.longitude()),
            "year": lambda: str(moment().year),
            "uuid": lambda: str(fake.uuid4()),
            "sha_short": lambda: str(fake.sha1())[:10],
            "iso8601": lambda: moment().isoformat(),
            "port": lambda: str(fake.port_number()),
            "quarter": lambda: str(rng.randint(1, 4)),
            "month": lambda: moment().strftime("%B"),
        }
        pieces = []
        rest = template
        while "{" in rest:
            before, _, after = rest.partition("{")
            name, _, rest = after.partition("}")
            pieces += [before, producers[name]()]
        pieces.append(rest)
        return "".join(pieces)


def _cycle(values: list[str], rng: random.Random) -> Iterator[str]:
    while True:
        yield from values
        rng.shuffle(values)


def _source(sample: Sample, source: str) -> Sample:
    return Sample(sample.text, sample.labels, source)
