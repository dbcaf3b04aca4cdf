"""Phone numbers as people write them, valid in a numbering plan or not (a reader still sees a phone number).

Formats follow ITU-T E.123 and national conventions (NANP, UK, Germany, France, ...), with the ranges reserved for
fiction and tests (NANP 555-0100..0199, Ofcom's drama ranges, ACMA's 5550 and 0491 570), the extensions and
international prefixes seen in real text ("x149", "ext. 12", "001-", "0044"), and the formats presidio-evaluator's
own PhoneNumberProviderNew and Faker's locales write. '#' is any digit, '%' a digit 1-9, '$' a digit 2-9.
"""

from __future__ import annotations

import random

_NANP = (
    "$##-$##-####",
    "($##) $##-####",
    "($##)$##-####",
    "$##.$##.####",
    "$##$##$###",  # bare ten digits
    "$## $## ####",
    "1-$##-$##-####",
    "1 ($##) $##-####",
    "+1 $## $## ####",
    "+1-$##-$##-####",
    "+1 ($##) $##-####",
    "+1.$##.$##.####",
    "001-$##-$##-####",
    "001 $## $## ####",
    "$##-555-01##",  # NANP fiction range
    "($##) 555-01##",
    "$##.555.01##",
    "555-01##",
    "1-800-555-01##",
    "1-8$$-$##-####",  # toll free
    "(8$$) $##-####",
)
_EXTENSIONS = ("x#", "x##", "x###", "x####", " x###", " ext. ##", " ext ###", " ext.###", " extension ####", " Ext. #")
_INTERNATIONAL = (
    # United Kingdom, with Ofcom's drama ranges
    "+44 20 7946 0###",
    "+44 (0)20 7946 0###",
    "020 7946 0###",
    "(020) 7946 0###",
    "0044 20 7946 0###",
    "07700 900###",
    "+44 7700 900###",
    "+447700900###",
    "0113 496 0###",
    "(0113) 496 0###",
    "+44 113 496 0###",
    "0161 496 0###",
    "01632 960###",
    # Germany
    "+49 30 %#######",
    "+49 (0)30 %######",
    "030 %#######",
    "030/%######",
    "+49 151 ########",
    "0151 ########",
    "0049 89 %######",
    "+49-89-%######",
    "(089) %######",
    # France
    "+33 1 ## ## ## ##",
    "01 ## ## ## ##",
    "06.##.##.##.##",
    "+33 (0)6 ## ## ## ##",
    "0033 6 ## ## ## ##",
    "+33 6########",
    # Elsewhere
    "+39 06 #### ####",
    "+39 3## ### ####",
    "+34 9## ### ###",
    "+34 6## ## ## ##",
    "+31 20 ### ####",
    "+31 (0)6 ########",
    "+61 2 #### ####",
    "(02) 5550 ####",  # ACMA fiction range
    "0491 570 ###",  # ACMA fiction range
    "+61 491 570 ###",
    "+91 9#### #####",
    "+91-98###-#####",
    "+81 3-####-####",
    "+86 138 #### ####",
    "+55 11 9####-####",
    "(11) 9####-####",
    "+972 3-###-####",
    "+972-5#-###-####",
    "+353 1 ### ####",
    "+46 8 ### ### ##",
    "+46 (0)8 ### ### ##",
    "+41 44 ### ## ##",
    "+41 (0)7# ### ## ##",
    "+7 495 ###-##-##",
    "+27 21 ### ####",
    "+64 9 ### ####",
    "+52 55 #### ####",
    "+65 #### ####",
    "+852 #### ####",
    "+48 ## ### ## ##",
    "+420 ### ### ###",
    "+45 ## ## ## ##",
    "+47 ### ## ###",
    "+358 40 ### ####",
    "+43 1 #######",
    "+32 2 ### ## ##",
    "+351 21 ### ####",
    "+30 21 #### ####",
    "+90 212 ### ## ##",
    "+1 416 $## ####",
)


def _fill(pattern: str, rng: random.Random) -> str:
    digits = {"#": "0123456789", "%": "123456789", "$": "23456789"}
    return "".join(rng.choice(digits[char]) if char in digits else char for char in pattern)


def written_phone(rng: random.Random) -> str:
    """One phone number: NANP styles (a third of them with an extension) or an international/national format."""
    if rng.random() < 0.5:
        number = _fill(rng.choice(_NANP), rng)
        if rng.random() < 0.3:
            number += _fill(rng.choice(_EXTENSIONS), rng)
        return number
    return _fill(rng.choice(_INTERNATIONAL), rng)


def every_phone_format(rng: random.Random) -> list[str]:
    """One number of every format, and every NANP format with every extension style."""
    numbers = [_fill(pattern, rng) for pattern in _NANP + _INTERNATIONAL]
    numbers += [_fill(pattern + extension, rng) for pattern in _NANP[:8] for extension in _EXTENSIONS]
    return numbers
