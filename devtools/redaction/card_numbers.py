"""Card numbers of every issuer range and length the card networks publish, Luhn-valid, written the ways people write
them. Independent of the engine: the ranges come from the networks' published IIN tables (as collected in ISO/IEC
7812 registries and the Wikipedia "Payment card number" table), not from anything the engine accepts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class CardNetwork:
    name: str
    prefixes: tuple[str, ...]  # "4", "51-55", "622126-622925": ranges of equal-length prefixes
    lengths: tuple[int, ...]


def _lengths(low: int, high: int) -> tuple[int, ...]:
    return tuple(range(low, high + 1))


CARD_NETWORKS: tuple[CardNetwork, ...] = (
    CardNetwork("Visa", ("4",), (13, 16, 19)),
    CardNetwork("Visa Electron", ("4026", "417500", "4508", "4844", "4913", "4917"), (16,)),
    CardNetwork("Mastercard", ("51-55", "2221-2720"), (16,)),
    CardNetwork("American Express", ("34", "37"), (15,)),
    CardNetwork("Discover", ("6011", "644-649", "65", "622126-622925"), _lengths(16, 19)),
    CardNetwork("JCB", ("3528-3589",), _lengths(15, 19)),
    CardNetwork("JCB (15-digit legacy)", ("2131", "1800"), (15,)),
    CardNetwork(
        "Maestro", ("5018", "5020", "5038", "5893", "6304", "6759", "6761-6763", "50", "56-69"), _lengths(12, 19)
    ),
    CardNetwork("Maestro UK", ("6759", "676770", "676774"), _lengths(12, 19)),
    CardNetwork("UnionPay", ("62",), _lengths(16, 19)),
    CardNetwork("Diners Club International", ("36",), _lengths(14, 19)),
    CardNetwork("Diners Club", ("38", "39", "3095"), _lengths(14, 19)),
    CardNetwork("Diners Club Carte Blanche", ("300-305",), (14, 16, 17, 18, 19)),
    CardNetwork("Diners Club US & Canada", ("54", "55"), (16,)),
    CardNetwork("Mir", ("2200-2204",), _lengths(16, 19)),
    CardNetwork("BORICA", ("2205",), (16,)),
    CardNetwork("RuPay", ("60", "65", "81", "82", "508", "353", "356"), (16,)),
    CardNetwork("InterPayment", ("636",), _lengths(16, 19)),
    CardNetwork("InstaPayment", ("637-639",), (16,)),
    CardNetwork("Troy", ("65", "9792"), (16,)),
    CardNetwork("Dankort", ("5019", "4571"), (16,)),
    CardNetwork("UATP", ("1",), (15,)),
    CardNetwork("Verve", ("506099-506198", "650002-650027", "507865-507964"), (16, 18, 19)),
    CardNetwork("LankaPay", ("357111",), (16,)),
    CardNetwork("Uzcard", ("8600", "5614"), (16,)),
    CardNetwork("Humo", ("9860",), (16,)),
    CardNetwork("China T-Union", ("31",), (19,)),
    CardNetwork("GPN", ("1946", "50", "56", "58", "60-63"), (16, 18, 19)),
    CardNetwork("UkrCard", ("60400100-60420099",), _lengths(16, 19)),
    CardNetwork("Solo", ("6334", "6767"), (16, 18, 19)),
    CardNetwork("Switch", ("4903", "4905", "4911", "4936", "564182", "633110", "6333", "6759"), (16, 18, 19)),
    CardNetwork("Laser", ("6304", "6706", "6771", "6709"), _lengths(16, 19)),
    CardNetwork("NPS Pridnestrovie", ("6054740-6054744",), (16,)),
)


def luhn_check_digit(partial: str) -> str:
    """The digit that makes partial + digit pass the Luhn check."""
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char)
        if index % 2 == 0:  # these positions are doubled once the check digit is appended
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def _random_prefix(spec: str, rng: random.Random) -> str:
    low, _, high = spec.partition("-")
    if not high:
        return low
    return str(rng.randint(int(low), int(high))).zfill(len(low))


def card_number(network: CardNetwork, length: int, rng: random.Random, prefix_spec: str | None = None) -> str:
    prefix = _random_prefix(prefix_spec or rng.choice(network.prefixes), rng)
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + luhn_check_digit(body)


def _grouped(number: str, sizes: list[int], separator: str) -> str:
    groups, position = [], 0
    for size in sizes:
        groups.append(number[position : position + size])
        position += size
    if position < len(number):
        groups.append(number[position:])
    return separator.join(group for group in groups if group)


def written_card(number: str, rng: random.Random) -> str:
    """Plain, in fours, or in the network's grouping (Amex 4-6-5, Diners 4-6-4, 19 digits 6-13), spaces or dashes."""
    style = rng.random()
    if style < 0.3:
        return number
    separator = " " if style < 0.75 else "-"
    if rng.random() < 0.5:
        if len(number) == 15:
            return _grouped(number, [4, 6, 5], separator)
        if len(number) == 14:
            return _grouped(number, [4, 6, 4], separator)
        if len(number) == 19:
            return _grouped(number, [6, 13], separator)
        if len(number) == 13:
            return _grouped(number, [4, 3, 3, 3], separator)
    return _grouped(number, [4] * 5, separator)


def every_card(rng: random.Random) -> list[tuple[str, str]]:
    """(network name, written number): one card of every network, issuer range and length it issues."""
    return [
        (network.name, written_card(card_number(network, length, rng, prefix), rng))
        for network in CARD_NETWORKS
        for prefix in network.prefixes
        for length in network.lengths
    ]
