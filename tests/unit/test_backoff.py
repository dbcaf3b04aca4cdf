"""The one backoff (exponential, full jitter) and the one Retry-After reader, shared by partner calls and webhooks."""

from __future__ import annotations

import random
from email.utils import formatdate

import httpx
import pytest

from gateway_core.jobs.backoff import backoff_delay, parse_retry_after

# --- backoff with full jitter -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tries", [0, 1, 2, 3, 4, 8, 20])
def test_backoff_full_jitter_bounds(tries: int) -> None:
    base, cap = 0.25, 5.0
    ceiling = min(cap, base * 2 ** max(0, tries - 1))
    rng = random.Random(1234)
    delays = [backoff_delay(tries, base, cap, None, rng) for _ in range(2000)]
    assert all(0 <= d <= ceiling for d in delays)
    # full jitter: spread over the whole [0, ceiling] range, not bunched at the top
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_delay(3, 0.5, 30, None, random.Random(7)) for _ in range(3)]
    again = [backoff_delay(3, 0.5, 30, None, random.Random(7)) for _ in range(3)]
    assert first == again


def test_backoff_never_sooner_than_retry_after() -> None:
    rng = random.Random(99)
    for _ in range(500):
        assert backoff_delay(1, 0.5, 30.0, 2.0, rng) >= 2.0
    # a Retry-After below the jitter still allows the jittered (larger) delay
    delays = [backoff_delay(6, 1.0, 30.0, 0.001, random.Random(s)) for s in range(200)]
    assert all(0.001 <= d <= 30.0 for d in delays)
    assert max(delays) > 1.0


# --- Retry-After: one value, or a response's headers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("1.5", 1.5),
        (" 2 ", 2.0),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
        ("garbage", None),
    ],
)
def test_a_retry_after_value(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_an_http_date_counts_from_now() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 -0000", now=now) == 30.0  # no zone given: GMT


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "4"}, 4.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # OpenAI's milliseconds win
        ({"retry-after-ms": "", "retry-after": "9"}, 9.0),
        ({"retry-after-ms": "-20"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"x-other": "1"}, None),
    ],
)
def test_response_headers(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == expected


def test_headers_and_value_read_a_date_alike() -> None:
    now = 1_700_000_000.0
    date = formatdate(now + 12, usegmt=True)
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=now) == parse_retry_after(date, now=now) == 12
