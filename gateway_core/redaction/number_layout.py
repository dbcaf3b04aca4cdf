"""Written numbers taken apart into digit groups and separators, and the layouts that are never phone numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import regex

_DIGITS = regex.compile(r"\d+")
_NON_DIGITS = regex.compile(r"[^\d]+")


@dataclass(frozen=True)
class Layout:
    """A written number: its digit groups and what separates them."""

    groups: tuple[str, ...]
    separators: tuple[str, ...]  # between consecutive groups: the non-space characters, or " " when only spaces
    international_lead: bool  # written with '+'
    parenthesised: bool

    @property
    def digit_count(self) -> int:
        return sum(len(group) for group in self.groups)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(group) for group in self.groups)


def parse_layout(number: str) -> Layout:
    stripped = number.strip()
    groups = tuple(_DIGITS.findall(stripped))
    inner = stripped.lstrip("+(").rstrip(")")
    first_digit = _DIGITS.search(inner)
    between = _NON_DIGITS.findall(inner, first_digit.start() if first_digit else 0)
    separators = tuple(separator.strip() or " " for separator in between)[: max(0, len(groups) - 1)]
    return Layout(groups, separators, stripped.startswith(("+", "\uff0b")), "(" in stripped)


def _is_date(groups: Sequence[str]) -> bool:
    """Three groups that read as day/month/year, month/day/year or year/month/day."""
    first, second, third = (int(group) for group in groups)
    if len(groups[0]) <= 2 and len(groups[1]) <= 2 and len(groups[2]) in (2, 4):
        day_month = (1 <= first <= 31 and 1 <= second <= 12) or (1 <= first <= 12 and 1 <= second <= 31)
        return day_month and (len(groups[2]) == 2 or 1800 <= third <= 2199)
    if len(groups[0]) == 4 and len(groups[1]) <= 2 and len(groups[2]) <= 2:
        return 1800 <= first <= 2199 and 1 <= second <= 12 and 1 <= third <= 31
    return False


def is_date(layout: Layout) -> bool:
    """A date written with '.', '/' or '-': the whole number, or its start before a time ("2008-07-09 10:13",
    "2008-07-09T10:13")."""
    groups, separators = layout.groups, layout.separators
    if len(groups) < 3 or (len(groups) > 3 and separators[2] not in (" ", "T", "t")):
        return False
    joined_by = set(separators[:2])
    return len(joined_by) == 1 and joined_by <= {".", "/", "-"} and _is_date(groups[:3])


def is_thousands(layout: Layout) -> bool:
    """1 234 567 / 1.234.567: a first group of 1-3 digits, then groups of exactly three, one kind of separator."""
    sizes = layout.sizes
    return (
        len(sizes) >= 2
        and len(set(layout.separators)) == 1
        and layout.separators[0] in (" ", ".", ",", "'")
        and 1 <= sizes[0] <= 3
        and all(size == 3 for size in sizes[1:])
    )


def is_decimal(layout: Layout) -> bool:
    return len(layout.groups) == 2 and layout.separators == (".",)


def is_version_like(layout: Layout) -> bool:
    """16.40.228, 3.12.1.4: three or four groups joined by dots, a short first group (not a NANP 555.123.4567)."""
    return 3 <= len(layout.groups) <= 4 and set(layout.separators) == {"."} and len(layout.groups[0]) <= 2


def never_a_phone_number(layout: Layout) -> bool:
    """Dates and numbers ending in a one-digit group (ISBN-10 "0-647-97718-4") are not phone numbers."""
    if len(layout.groups) > 1 and len(layout.groups[-1]) == 1:
        return True
    return is_date(layout)
