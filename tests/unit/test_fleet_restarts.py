"""`fedgate up`'s supervisor restarts a child that exited, after an exponential backoff that is capped and starts
over once the child has stayed up a while; it never stops the fleet because a child died. Driven with stand-in
processes and a clock the test advances (the real processes: tests/integration/test_fleet_supervisor.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

from gateway_api import fleet as fleet_module
from gateway_api.fleet import RESTART_DELAY_MAX_S, RESTART_DELAY_S, STABLE_AFTER_S, Child, Fleet, Restarts
from gateway_core.settings import Settings

_pids = count(1000)


@dataclass
class StandIn:
    """What the supervisor reads of a child process."""

    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def die(self, code: int = -9) -> None:
        self.returncode = code


def test_the_backoff_doubles_up_to_its_cap() -> None:
    restarts = Restarts()
    delays = [restarts.delay_after(0.1) for _ in range(12)]
    assert delays[:4] == [RESTART_DELAY_S, 2 * RESTART_DELAY_S, 4 * RESTART_DELAY_S, 8 * RESTART_DELAY_S]
    assert max(delays) == RESTART_DELAY_MAX_S and delays[-1] == RESTART_DELAY_MAX_S
    assert delays == sorted(delays)


def test_a_child_that_stayed_up_a_while_starts_the_backoff_over() -> None:
    restarts = Restarts()
    for _ in range(5):
        restarts.delay_after(1.0)
    assert restarts.delay_after(STABLE_AFTER_S - 1) > RESTART_DELAY_S  # still failing quickly
    assert restarts.delay_after(STABLE_AFTER_S) == RESTART_DELAY_S
    assert restarts.delay_after(1.0) == 2 * RESTART_DELAY_S


@pytest.fixture()
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """A fleet of two stand-in children; starting one gives it a fresh stand-in process."""
    supervised = Fleet(Settings(home=tmp_path))

    def spawn(child: Child) -> None:
        child.process = StandIn(next(_pids))  # type: ignore[assignment]
        child.started_at, child.restart_at = clock["now"], None
        child.starts += 1
        supervised.children[child.name] = child.process  # type: ignore[assignment]

    clock = {"now": 100.0}
    monkeypatch.setattr(supervised, "_spawn", spawn)
    monkeypatch.setattr(fleet_module.time, "monotonic", lambda: clock["now"])
    for name in ("api", "worker-a"):
        supervised.supervised[name] = Child(name, ["true"])
        spawn(supervised.supervised[name])
    supervised.clock = clock  # type: ignore[attr-defined]
    return supervised


def advance(fleet: Fleet, seconds: float) -> None:
    fleet.clock["now"] += seconds  # type: ignore[attr-defined]
    fleet.supervise_once(fleet.clock["now"])  # type: ignore[attr-defined]


def test_a_child_that_dies_is_restarted_after_its_backoff_and_the_others_are_left_alone(supervisor: Fleet) -> None:
    fleet = supervisor
    worker, api = fleet.supervised["worker-a"], fleet.supervised["api"]
    first, api_process = worker.process, api.process
    assert isinstance(first, StandIn)
    advance(fleet, 5.0)
    first.die()
    advance(fleet, 0.0)  # noticed: its restart is scheduled, not done
    assert worker.process is first and worker.restart_at == pytest.approx(fleet.clock["now"] + RESTART_DELAY_S)  # type: ignore[attr-defined]
    advance(fleet, RESTART_DELAY_S / 2)
    assert worker.process is first
    advance(fleet, RESTART_DELAY_S / 2)
    assert worker.process is not first and worker.process is not None and worker.process.poll() is None
    assert api.process is api_process and fleet.children["worker-a"] is worker.process
    written = json.loads((fleet.settings.home_dir() / "fleet.json").read_text())
    assert written["children"]["worker-a"] == worker.process.pid and written["restarts"]["worker-a"] == 1
    assert written["children"]["api"] == api_process.pid and written["restarts"]["api"] == 0  # type: ignore[union-attr]


def test_a_child_that_keeps_dying_waits_longer_each_time_up_to_the_cap(supervisor: Fleet) -> None:
    fleet = supervisor
    worker = fleet.supervised["worker-a"]
    waits: list[float] = []
    for _ in range(10):
        assert isinstance(worker.process, StandIn)
        worker.process.die(1)
        advance(fleet, 0.0)
        assert worker.restart_at is not None
        waits.append(worker.restart_at - fleet.clock["now"])  # type: ignore[attr-defined]
        advance(fleet, waits[-1])
    assert waits[:3] == [RESTART_DELAY_S, 2 * RESTART_DELAY_S, 4 * RESTART_DELAY_S]
    assert waits[-1] == RESTART_DELAY_MAX_S
    assert worker.starts == 11
    # once it has stayed up long enough, the next failure is restarted quickly again
    advance(fleet, STABLE_AFTER_S)
    assert isinstance(worker.process, StandIn)
    worker.process.die(1)
    advance(fleet, 0.0)
    assert worker.restart_at == pytest.approx(fleet.clock["now"] + RESTART_DELAY_S)  # type: ignore[attr-defined]


def test_a_restart_that_fails_is_tried_again_later(supervisor: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = supervisor
    worker = fleet.supervised["worker-a"]
    assert isinstance(worker.process, StandIn)
    worker.process.die()
    advance(fleet, 0.0)

    def cannot(child: Child) -> None:
        raise OSError("no more processes")

    working_spawn = fleet._spawn
    monkeypatch.setattr(fleet, "_spawn", cannot)
    advance(fleet, RESTART_DELAY_S)
    assert worker.restart_at is not None and worker.restart_at > fleet.clock["now"]  # type: ignore[attr-defined]
    monkeypatch.setattr(fleet, "_spawn", working_spawn)
    advance(fleet, worker.restart_at - fleet.clock["now"])  # type: ignore[attr-defined]
    assert worker.process is not None and worker.process.poll() is None
