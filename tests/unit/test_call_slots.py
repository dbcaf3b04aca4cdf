"""workers.call_slots: the bound on partner calls in flight, and who gets a freed slot."""

from __future__ import annotations

import asyncio

import pytest

from gateway_core.fleet import keys, metrics
from workers.call_slots import CallSlots, WorkerStopping


async def _hold(slots: CallSlots, lane: str, name: str, order: list[str], release: asyncio.Event) -> None:
    async with slots.slot(lane):
        order.append(name)
        await release.wait()


async def _queued(slots: CallSlots, lane: str, name: str, order: list[str],
                  release: asyncio.Event) -> asyncio.Task[None]:
    """A task holding, or waiting for, a slot until `release`, given one loop turn to get there."""
    task = asyncio.create_task(_hold(slots, lane, name, order, release))
    await asyncio.sleep(0)
    return task


def _waiting_gauge(lane: str) -> float:
    return float(metrics.JOBS_WAITING_FOR_CALL_SLOT.labels(lane)._value.get())


def test_never_more_holders_than_the_limit() -> None:
    async def scenario() -> int:
        slots, peak, inside = CallSlots(3), 0, 0

        async def call() -> None:
            nonlocal peak, inside
            async with slots.slot(keys.INTERACTIVE):
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                inside -= 1

        await asyncio.gather(*(call() for _ in range(50)))
        assert slots.free == 3 and slots.waiting == 0
        return peak

    assert asyncio.run(scenario()) == 3


def test_a_freed_slot_goes_to_an_interactive_waiter_before_earlier_batch_waiters() -> None:
    async def scenario() -> list[str]:
        slots, order, release = CallSlots(1), [], asyncio.Event()
        batch_before, interactive_before = _waiting_gauge(keys.BATCH), _waiting_gauge(keys.INTERACTIVE)
        holder = await _queued(slots, keys.BATCH, "running", order, release)
        batch = [asyncio.create_task(_hold(slots, keys.BATCH, f"batch-{i}", order, release)) for i in range(3)]
        await asyncio.sleep(0)
        interactive = await _queued(slots, keys.INTERACTIVE, "interactive", order, release)
        assert slots.waiting == 4
        assert _waiting_gauge(keys.BATCH) == batch_before + 3
        assert _waiting_gauge(keys.INTERACTIVE) == interactive_before + 1
        release.set()
        await asyncio.gather(holder, *batch, interactive)
        assert (_waiting_gauge(keys.BATCH), _waiting_gauge(keys.INTERACTIVE)) == (batch_before, interactive_before)
        return order

    assert asyncio.run(scenario()) == ["running", "interactive", "batch-0", "batch-1", "batch-2"]


def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot() -> None:
    async def scenario() -> None:
        slots, order, release = CallSlots(1), [], asyncio.Event()
        holder = await _queued(slots, keys.INTERACTIVE, "holder", order, release)
        gone = await _queued(slots, keys.INTERACTIVE, "gone", order, release)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert slots.waiting == 0
        release.set()
        await holder
        assert slots.free == 1
        # cancelled just after the slot was handed over, before running: the slot passes on to the next waiter
        first, second = asyncio.Event(), asyncio.Event()
        holder = await _queued(slots, keys.INTERACTIVE, "holder-2", order, first)
        handed = asyncio.create_task(_hold(slots, keys.INTERACTIVE, "handed", order, second))
        after = await _queued(slots, keys.INTERACTIVE, "after", order, second)
        first.set()
        await asyncio.sleep(0)  # the holder leaves and hands its slot to "handed", which has not run yet
        handed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handed
        second.set()
        await asyncio.gather(holder, after)
        assert "handed" not in order and order[-1] == "after"
        assert slots.free == 1 and slots.waiting == 0

    asyncio.run(scenario())


def test_a_worker_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one call slot"):
        CallSlots(0)


def test_closing_turns_waiters_and_newcomers_away_while_holders_finish() -> None:
    async def scenario() -> None:
        slots, order, release = CallSlots(1), [], asyncio.Event()
        holder = await _queued(slots, keys.INTERACTIVE, "holder", order, release)
        waiter = await _queued(slots, keys.BATCH, "waiter", order, release)
        slots.close()
        with pytest.raises(WorkerStopping):
            await waiter
        with pytest.raises(WorkerStopping):
            await slots.acquire(keys.INTERACTIVE)
        release.set()
        await holder
        assert order == ["holder"] and slots.free == 1

    asyncio.run(scenario())
