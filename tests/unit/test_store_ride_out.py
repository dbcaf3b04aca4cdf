"""Claiming and settling a job ride out a short store outage (workers.pipeline.ride_out_store_outage): a lost
connection is tried again with backoff for at most a quarter of the visibility timeout (10 s at most), so a Redis
restart neither makes a run that already called the partner give its job back (the partner would be called again)
nor parks a job for a visibility timeout; anything but a lost connection is not retried."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis.exceptions

from workers.pipeline import STORE_RIDE_OUT_S, ride_out_store_outage


def runtime_with(visibility_timeout_s: float) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(visibility_timeout_s=visibility_timeout_s))


class Flaky:
    """A store step that loses its connection `failures` times, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or redis.exceptions.ConnectionError("Connection closed by server.")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "settled"


def test_a_step_that_loses_its_connection_is_tried_again_until_the_store_answers() -> None:
    step = Flaky(failures=3)
    assert asyncio.run(ride_out_store_outage(runtime_with(30), step)) == "settled"
    assert step.calls == 4


def test_timeouts_are_ridden_out_too() -> None:
    step = Flaky(failures=1, error=redis.exceptions.TimeoutError("Timeout reading from socket"))
    assert asyncio.run(ride_out_store_outage(runtime_with(30), step)) == "settled"


def test_an_outage_longer_than_the_ride_out_is_an_infrastructure_failure() -> None:
    step = Flaky(failures=10**6)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        asyncio.run(ride_out_store_outage(runtime_with(0.8), step))  # a quarter of it: 0.2 s
    assert time.monotonic() - started < 1.0
    assert 2 <= step.calls <= 5


def test_other_store_errors_are_not_retried() -> None:
    step = Flaky(failures=1, error=redis.exceptions.ResponseError("OOM command not allowed"))
    with pytest.raises(redis.exceptions.ResponseError):
        asyncio.run(ride_out_store_outage(runtime_with(30), step))
    assert step.calls == 1


def test_the_ride_out_stays_well_inside_the_visibility_timeout() -> None:
    assert STORE_RIDE_OUT_S <= 10
