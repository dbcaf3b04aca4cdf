"""Job statuses: the words clients see, and which of them are final."""

from __future__ import annotations

from gateway_core.jobs.models import TERMINAL, JobStatus

S = JobStatus


def test_terminal_statuses() -> None:
    assert {S.SUCCEEDED, S.DEAD_LETTERED, S.CANCELLED} == TERMINAL
    for status in JobStatus:
        assert status.terminal is (status in TERMINAL)


def test_status_values_are_the_wire_words() -> None:
    assert {s.value for s in JobStatus} == {
        "queued", "running", "waiting", "retrying", "succeeded", "dead_lettered", "cancelled"
    }
    assert JobStatus("dead_lettered") is S.DEAD_LETTERED
