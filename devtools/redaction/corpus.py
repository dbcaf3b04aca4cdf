"""The project's own labelled corpus: templates written here, filled by Faker, fully determined by a seed.

It was written alongside the engine, so it is a regression set, not the headline measure: that is the independent
corpus (devtools/redaction/independent_corpus.py).

Three kinds of text:
- PII samples: one or two sentences holding labelled values (international phone formats, IPv6, IBANs from several
  countries, cards with spaces/dashes, adjacent values of the same type).
- PII-free samples: text dense with numbers that are NOT PII (dates, times, prices, version strings, order ids,
  counts, ISBNs, hashes, tracking numbers) so that false positives show up.
- ~1 KB prompts mixing both, for the benchmark.

Labelling choices, stated so the figures can be read correctly:
- Phone numbers are Faker numbers kept only when python-phonenumbers' matcher (VALID leniency, as Presidio uses it)
  reads the whole written string as one number of its country: valid in the numbering plan, national prefix
  present where the country requires it. A number with an unassigned area code is not labelled a phone number.
  National formats are generated only for the policy's default phone regions; other countries' numbers are written
  with their country code, as a text read outside that country would show them.
- Cards are Luhn-valid numbers of the brands whose numbering Presidio's card pattern covers, plus Mastercard's
  2-series (2221-2720), which that pattern misses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import phonenumbers
from faker import Faker

from devtools.redaction.samples import LabelledValue, Sample, join_samples
from gateway_core.redaction.policy import (
    CREDIT_CARD,
    CRYPTO,
    EMAIL_ADDRESS,
    IBAN_CODE,
    IP_ADDRESS,
    PHONE_NUMBER,
    US_SSN,
)

DEFAULT_SEED = 20240611

REQUIRED_RECALL_TYPES: tuple[str, ...] = (EMAIL_ADDRESS, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, PHONE_NUMBER, US_SSN)



# A template is a list of literal pieces and slots; a slot is (entity, generator name).
_Slot = tuple[str, str]
_Piece = str | _Slot


def _t(*pieces: _Piece) -> tuple[_Piece, ...]:
    return pieces


E, P, C, IB, IP, S, W = EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, US_SSN, CRYPTO

_PII_TEMPLATES: tuple[tuple[_Piece, ...], ...] = (
    _t("Please send the signed contract to ", (E, "email"), " before Friday."),
    _t("Contact: ", (E, "email")),
    _t("cc ", (E, "email"), " ", (E, "email"), " on the thread please"),
    _t("Reply-To: <", (E, "email"), ">, Sender: ", (E, "email")),
    _t("Her address is ", (E, "email"), "; his is ", (E, "email"), "."),
    _t("mailto:", (E, "email"), "?subject=Invoice"),
    _t("Call me at ", (P, "phone"), " after 5pm."),
    _t("Phone: ", (P, "phone")),
    _t("My mobile is ", (P, "phone"), ", the office line is ", (P, "phone"), "."),
    _t("You can reach the front desk on ", (P, "phone"), " or ", (P, "phone"), " (24h)."),
    _t("Tel. ", (P, "phone"), " / fax ", (P, "phone")),
    _t("Call ", (P, "phone"), " ", (P, "phone"), " in that order."),
    _t("WhatsApp number: ", (P, "phone"), "."),
    _t("The card on file is ", (C, "card"), ", expiry 09/27."),
    _t("Please charge ", (C, "card"), " for the renewal of $1,299.00."),
    _t("Visa ", (C, "card"), " CVC 123"),
    _t("Card: ", (C, "card"), " and backup card ", (C, "card")),
    _t("Please wire the refund to ", (IB, "iban"), " by Monday."),
    _t("IBAN: ", (IB, "iban"), " (BIC on request)"),
    _t("Our bank account ", (IB, "iban"), " replaces ", (IB, "iban"), "."),
    _t("The request came from ", (IP, "ipv4"), " at 10:22:01."),
    _t("Server ", (IP, "ipv6"), " stopped answering; failover is ", (IP, "ipv4"), "."),
    _t("allow-list: ", (IP, "ipv4"), ", ", (IP, "ipv6"), ", ", (IP, "ipv4")),
    _t("ssh admin@", (IP, "ipv4"), " then restart the service"),
    _t("The SSN provided was ", (S, "ssn"), "."),
    _t("social security number: ", (S, "ssn"), ", date of birth 1984-02-29"),
    _t("SSN ", (S, "ssn_compact"), " on the W-2"),
    _t("Send the BTC to wallet ", (W, "btc"), " today."),
    _t("Customer ", (E, "email"), " (phone ", (P, "phone"), ") paid with ", (C, "card"), "."),
    _t("Refund ", (C, "card"), " then wire the rest to ", (IB, "iban"), "; confirm to ", (E, "email"), "."),
    _t("Login from ", (IP, "ipv4"), " by ", (E, "email"), ", SSN on file ", (S, "ssn"), "."),
    _t("Card ", (C, "card"), " ", (P, "phone"), " was the callback number."),
)

_PII_FREE_TEMPLATES: tuple[str, ...] = (
    "Order {order_id} shipped on {date} and should arrive within {small} business days.",
    "The total was {price} including {pct}% VAT; the previous invoice {invoice} was {price}.",
    "We upgraded from version {version} to {version} and the build {build} passed all {count} tests.",
    "Ticket #{ticket} is closed; see ticket #{ticket} for the follow-up on {date}.",
    "We processed {big} rows in {float} seconds, peaking at {count} rows per second.",
    "The meeting moved to {time} on {long_date}, room {room} on floor {small}.",
    "SKU {sku} costs {price} and ships in boxes of {small}; {count} units are in stock.",
    "ISBN {isbn} is the second edition, printed in {year}.",
    "Commit {sha} fixed the regression introduced in {sha_short} on {date}.",
    "Tracking number {tracking} was scanned at the depot at {time}.",
    "The API returned HTTP {status} after {ms} ms; the retry at {time} returned {status}.",
    "Set the timeout to {ms} ms and the pool size to {small}; see RFC {rfc} section {section}.",
    "Python {version_short} and Node {version} are both supported; Ubuntu {ubuntu} LTS is the base image.",
    "Population grew from {big} in {year} to {big} in {year}, about {float}% per year.",
    "The invoice {invoice} dated {slash_date} lists {count} items at {price} each.",
    "Coordinates {lat}, {lon} are about {float} km from the warehouse.",
    "Screen resolution {width}x{height}, refresh rate {small}0 Hz, {count} MB of VRAM.",
    "Batch {batch} finished: {count} succeeded, {small} failed, duration {duration}.",
    "Our Q{quarter} revenue was {price} million, up {pct}% from Q{quarter} {year}.",
    "Listen on port {port}; the health check runs every {small} seconds.",
    "Use the coupon code SPRING{year} before {long_date} for {pct}% off.",
    "The package weighs {float} kg and measures {small}0 x {small}0 x {small}0 cm.",
    "Reference {reference} was approved on {date} for {price}.",
    "The function ran in {float} s over {big} iterations with seed {seed}.",
)

_EMAIL_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")
_IBAN_LOCALES = ("de_DE", "fr_FR", "en_GB", "nl_NL", "es_ES", "it_IT", "pl_PL", "fi_FI", "de_AT", "nl_BE", "pt_PT")
_NATIONAL_PHONE_LOCALES = {
    "US": "en_US",
    "GB": "en_GB",
    "DE": "de_DE",
    "FR": "fr_FR",
    "IL": "he_IL",
    "IN": "en_IN",
    "CA": "en_CA",
    "BR": "pt_BR",
}
_INTERNATIONAL_PHONE_LOCALES = {
    "IT": "it_IT",
    "ES": "es_ES",
    "NL": "nl_NL",
    "PL": "pl_PL",
    "JP": "ja_JP",
    "AU": "en_AU",
    "CH": "de_CH",
    "SE": "sv_SE",
    "MX": "es_MX",
}
_CARD_TYPES = ("visa16", "visa13", "mastercard", "amex", "discover", "jcb16", "diners")
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass
class _Generators:
    rng: random.Random
    fakers: dict[str, Faker] = field(default_factory=dict)

    def faker(self, locale: str) -> Faker:
        if locale not in self.fakers:
            fake = Faker(locale)
            fake.seed_instance(self.rng.randrange(2**32))
            self.fakers[locale] = fake
        return self.fakers[locale]

    # --- PII values -------------------------------------------------------------------------------------------

    def email(self) -> str:
        fake = self.faker(self.rng.choice(_EMAIL_LOCALES))
        kind = self.rng.random()
        if kind < 0.5:
            return str(fake.email())
        if kind < 0.7:
            return str(fake.company_email())
        if kind < 0.85:
            local = f"{fake.first_name()}.{fake.last_name()}+{fake.word()}".lower().replace(" ", "")
            return f"{local}@{fake.domain_name()}"
        return f"{fake.user_name()}@{fake.domain_word()}.co.uk"

    def phone(self) -> str:
        for _ in range(200):
            if self.rng.random() < 0.6:
                region = self.rng.choice(sorted(_NATIONAL_PHONE_LOCALES))
                raw = str(self.faker(_NATIONAL_PHONE_LOCALES[region]).phone_number())
                candidate = self._valid_phone(raw, region, national_ok=True)
            else:
                region = self.rng.choice(sorted(_INTERNATIONAL_PHONE_LOCALES))
                raw = str(self.faker(_INTERNATIONAL_PHONE_LOCALES[region]).phone_number())
                candidate = self._valid_phone(raw, region, national_ok=False)
            if candidate:
                return candidate
        raise RuntimeError("Faker produced no valid phone number in 200 tries")

    def _valid_phone(self, raw: str, region: str, *, national_ok: bool) -> str | None:
        """The number written in one of several styles, if phonenumbers' matcher reads all of it as one valid number."""
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(number):
            return None
        international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        style = self.rng.random()
        if style < 0.35:
            written = raw  # Faker's own styles: (555) 123-4567x89, +44(0)115 4960914, 0049 ...
        elif style < 0.55 and national_ok:
            written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        elif style < 0.75:
            written = international
        elif style < 0.85:
            written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        else:
            written = international if region in ("US", "CA") else "00" + international[1:]
        if not national_ok and not written.startswith(("+", "00")):
            return None
        if not _read_as_one_number(written, region):
            return None
        if written.startswith(("+", "00")):
            # With a country code, the number must read the same whatever the reader's region.
            with_plus = "+" + written[2:] if written.startswith("00") else written
            if not _read_as_one_number(with_plus, "ZZ"):
                return None
        return written

    def card(self) -> str:
        fake = self.faker("en_US")
        number = str(fake.credit_card_number(self.rng.choice(_CARD_TYPES)))
        style = self.rng.random()
        if style < 0.35:
            return number
        separator = " " if style < 0.7 else "-"
        if len(number) in (14, 15):  # Amex 4-6-5, Diners 4-6-4
            groups = [number[:4], number[4:10], number[10:]]
        elif len(number) == 13:  # Visa 13: 4-3-3-3
            groups = [number[:4], number[4:7], number[7:10], number[10:]]
        else:
            groups = [number[i : i + 4] for i in range(0, len(number), 4)]
        return separator.join(groups)

    def iban(self) -> str:
        compact = str(self.faker(self.rng.choice(_IBAN_LOCALES)).iban())
        if self.rng.random() < 0.5:
            return compact
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))

    def ipv4(self) -> str:
        fake = self.faker("en_US")
        return str(fake.ipv4_private() if self.rng.random() < 0.4 else fake.ipv4_public())

    def ipv6(self) -> str:
        address = ipaddress.IPv6Address(str(self.faker("en_US").ipv6()))
        if self.rng.random() < 0.3:
            # Zero runs so that the compressed '::' form shows up too.
            packed = bytearray(address.packed)
            packed[4:10] = bytes(6)
            address = ipaddress.IPv6Address(bytes(packed))
        return address.compressed if self.rng.random() < 0.7 else address.exploded

    def ssn(self) -> str:
        value = str(self.faker("en_US").ssn())
        return value if self.rng.random() < 0.8 else value.replace("-", " ")

    def ssn_compact(self) -> str:
        return str(self.faker("en_US").ssn()).replace("-", "")

    def btc(self) -> str:
        version = b"\x00" if self.rng.random() < 0.6 else b"\x05"
        payload = version + self.rng.randbytes(20)
        checksum = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
        number = int.from_bytes(payload + checksum, "big")
        encoded = ""
        while number:
            number, remainder = divmod(number, 58)
            encoded = _BASE58_ALPHABET[remainder] + encoded
        leading_zeros = len(payload + checksum) - len((payload + checksum).lstrip(b"\x00"))
        return "1" * leading_zeros + encoded

    # --- PII-free values ------------------------------------------------------------------------------------

    def pii_free_field(self, name: str) -> str:
        rng, fake = self.rng, self.faker("en_US")
        producers: dict[str, Callable[[], str]] = {
            "order_id": lambda: f"ORD-{rng.randint(2019, 2026)}-{rng.randint(0, 999999):06d}",
            "invoice": lambda: (
                f"INV-{rng.randint(2019, 2026)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}-"
                f"{rng.randint(1, 9999):04d}"
            ),
            "date": lambda: str(fake.date()),
            "slash_date": lambda: f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}",
            "long_date": lambda: fake.date_object().strftime("%B %d, %Y"),
            "time": lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
            "price": lambda: str(fake.pricetag()),
            "pct": lambda: f"{rng.randint(1, 99)}",
            "version": lambda: f"{rng.randint(0, 12)}.{rng.randint(0, 40)}.{rng.randint(0, 30)}",
            "version_short": lambda: f"3.{rng.randint(8, 13)}",
            "ubuntu": lambda: rng.choice(["20.04", "22.04", "24.04"]),
            "build": lambda: (
                f"{rng.randint(2019, 2026)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}.{rng.randint(1, 9)}"
            ),
            "count": lambda: str(rng.randint(10, 99999)),
            "small": lambda: str(rng.randint(1, 9)),
            "big": lambda: f"{rng.randint(1_000_000, 99_999_999):,}",
            "float": lambda: f"{rng.uniform(0.1, 999):.2f}",
            "ticket": lambda: str(rng.randint(1000, 99999)),
            "room": lambda: str(rng.randint(100, 1299)),
            "sku": lambda: f"{rng.randint(1000, 9999)}-{rng.choice('ABCDEFGH')}",
            "isbn": lambda: (
                f"978-{rng.randint(0, 9)}-{rng.randint(10, 99)}-{rng.randint(100000, 999999)}-{rng.randint(0, 9)}"
            ),
            "year": lambda: str(rng.randint(1990, 2026)),
            "sha": lambda: hashlib.sha1(rng.randbytes(8)).hexdigest(),
            "sha_short": lambda: hashlib.sha1(rng.randbytes(8)).hexdigest()[:7],
            "tracking": lambda: (
                f"1Z{rng.randint(100, 999)}{''.join(rng.choices('ABCDEFGHJKLMNPRSTUVWXYZ', k=2))}"
                f"{rng.randint(10**9, 10**10 - 1)}"
            ),
            "status": lambda: str(rng.choice([200, 201, 204, 301, 400, 404, 409, 429, 500, 502, 503])),
            "ms": lambda: str(rng.randint(5, 30000)),
            "rfc": lambda: str(rng.randint(700, 9999)),
            "section": lambda: f"{rng.randint(1, 9)}.{rng.randint(1, 9)}",
            "lat": lambda: f"{rng.uniform(-89, 89):.4f}",
            "lon": lambda: f"{rng.uniform(-179, 179):.4f}",
            "width": lambda: str(rng.choice([1280, 1366, 1920, 2560, 3840])),
            "height": lambda: str(rng.choice([720, 768, 1080, 1440, 2160])),
            "batch": lambda: f"batch_{rng.randint(1, 9999):04d}",
            "duration": lambda: f"{rng.randint(0, 9)}h {rng.randint(0, 59)}m {rng.randint(0, 59)}s",
            "quarter": lambda: str(rng.randint(1, 4)),
            "port": lambda: str(rng.choice([80, 443, 5432, 6379, 8000, 8080, 9090])),
            "reference": lambda: f"REF/{rng.randint(2019, 2026)}/{rng.randint(1, 99999):05d}",
            "seed": lambda: str(rng.randint(0, 2**31)),
        }
        return producers[name]()


def _read_as_one_number(written: str, region: str) -> bool:
    matches = list(phonenumbers.PhoneNumberMatcher(written, region, leniency=phonenumbers.Leniency.VALID))
    return len(matches) == 1 and matches[0].start == 0 and matches[0].end == len(written)


def _fill_pii_template(template: tuple[_Piece, ...], generators: _Generators) -> Sample:
    parts: list[str] = []
    labels: list[LabelledValue] = []
    position = 0
    for piece in template:
        if isinstance(piece, str):
            text = piece
        else:
            entity, generator_name = piece
            text = getattr(generators, generator_name)()
            labels.append(LabelledValue(entity, position, position + len(text), text))
        parts.append(text)
        position += len(text)
    return Sample("".join(parts), tuple(labels))


def _fill_pii_free_template(template: str, generators: _Generators) -> Sample:
    pieces: list[str] = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        pieces.append(before)
        pieces.append(generators.pii_free_field(name))
    pieces.append(rest)
    return Sample("".join(pieces))


def pii_samples(count: int, seed: int = DEFAULT_SEED) -> list[Sample]:
    """`count` short texts, each holding one or more labelled PII values."""
    generators = _Generators(random.Random(seed))
    return [_fill_pii_template(_PII_TEMPLATES[i % len(_PII_TEMPLATES)], generators) for i in range(count)]


def pii_free_samples(count: int, seed: int = DEFAULT_SEED + 1) -> list[Sample]:
    """`count` short texts full of numbers, none of them PII: redaction must leave them unchanged."""
    generators = _Generators(random.Random(seed))
    return [
        _fill_pii_free_template(_PII_FREE_TEMPLATES[i % len(_PII_FREE_TEMPLATES)], generators) for i in range(count)
    ]



def prompts(
    count: int, seed: int = DEFAULT_SEED + 2, target_chars: int = 1024, pii_share: float = 0.35
) -> list[Sample]:
    """`count` prompts of about `target_chars` characters, mixing PII sentences with number-heavy PII-free ones."""
    rng = random.Random(seed)
    pii = iter(pii_samples(count * 12, seed=seed + 10))
    pii_free = iter(pii_free_samples(count * 20, seed=seed + 20))

    def sentences() -> Iterator[Sample]:
        while True:
            yield next(pii) if rng.random() < pii_share else next(pii_free)

    return [join_samples(sentences(), target_chars) for _ in range(count)]
