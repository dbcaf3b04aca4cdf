"""The job state machine: which status may follow which."""

from __future__ import annotations

import itertools

import pytest

from gateway_core.models import TERMINAL, TRANSITIONS, JobStatus, can_transition

S = JobStatus
ALLOWED = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.DEAD_LETTERED),
    (S.RUNNING, S.RUNNING),  # redelivery after a worker died mid-call
    (S.RUNNING, S.WAITING),
    (S.RUNNING, S.RETRYING),
    (S.RUNNING, S.QUEUED),  # fallback to the next partner
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.DEAD_LETTERED),
    (S.RUNNING, S.CANCELLED),
    (S.WAITING, S.RUNNING),
    (S.WAITING, S.CANCELLED),
    (S.WAITING, S.DEAD_LETTERED),
    (S.RETRYING, S.RUNNING),
    (S.RETRYING, S.CANCELLED),
    (S.RETRYING, S.DEAD_LETTERED),
    (S.DEAD_LETTERED, S.QUEUED),  # operator replay
}


def test_every_status_has_a_transition_entry() -> None:
    assert set(TRANSITIONS) == set(JobStatus)


def test_terminal_statuses() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.DEAD_LETTERED, S.CANCELLED} == TERMINAL
    for status in JobStatus:
        assert status.terminal is (status in TERMINAL)


@pytest.mark.parametrize(("current", "new"), sorted(ALLOWED))
def test_allowed_transitions(current: JobStatus, new: JobStatus) -> None:
    assert can_transition(current, new)


FORBIDDEN = sorted(set(itertools.product(JobStatus, JobStatus)) - ALLOWED)


@pytest.mark.parametrize(("current", "new"), FORBIDDEN)
def test_every_other_transition_is_forbidden(current: JobStatus, new: JobStatus) -> None:
    assert not can_transition(current, new)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.FAILED, S.CANCELLED])
def test_terminal_states_have_no_exit(status: JobStatus) -> None:
    assert TRANSITIONS[status] == frozenset()


def test_dead_letter_only_leaves_for_a_replay() -> None:
    assert TRANSITIONS[S.DEAD_LETTERED] == frozenset({S.QUEUED})


@pytest.mark.parametrize("status", [S.QUEUED, S.WAITING, S.RETRYING])
def test_only_a_running_job_can_finish(status: JobStatus) -> None:
    assert not can_transition(status, S.SUCCEEDED)
    assert not can_transition(status, S.FAILED)


def test_every_non_terminal_status_can_be_cancelled_and_dead_lettered() -> None:
    for status in set(JobStatus) - TERMINAL:
        assert can_transition(status, S.CANCELLED), status
        assert can_transition(status, S.DEAD_LETTERED), status


def test_every_non_terminal_status_can_reach_a_terminal_one() -> None:
    for start in set(JobStatus) - TERMINAL:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL == TERMINAL, start


def test_status_values_are_the_wire_words() -> None:
    assert {s.value for s in JobStatus} == {
        "queued", "running", "waiting", "retrying", "succeeded", "failed", "dead_lettered", "cancelled"
    }
    assert JobStatus("dead_lettered") is S.DEAD_LETTERED
