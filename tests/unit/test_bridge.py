"""workers.bridge: synchronous task code awaiting coroutines on the worker's loop, many at once."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from greenlet import greenlet

from workers import bridge
from workers.bridge import TaskGreenlet, await_, drive


class Boom(Exception):
    pass


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


async def fail_after_yield(message: str) -> int:
    await asyncio.sleep(0)
    raise Boom(message)


def test_drive_runs_sync_code_that_awaits_several_coroutines() -> None:
    seen_loops: list[asyncio.AbstractEventLoop] = []

    async def where() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def task(a: int, b: int) -> tuple[int, int, int]:
        first = await_(double(a))
        second = await_(double(b))
        seen_loops.append(await_(where()))
        third = await_(asyncio.sleep(0.01, result=first + second))
        return first, second, third

    async def main() -> tuple[Any, asyncio.AbstractEventLoop]:
        return await drive(task, 3, 4), asyncio.get_running_loop()

    result, loop = asyncio.run(main())
    assert result == (6, 8, 14)
    assert seen_loops == [loop]  # awaited on the driving loop, not on the background fallback loop


def test_drive_returns_at_once_when_nothing_is_awaited() -> None:
    assert asyncio.run(drive(lambda x: x + 1, 41)) == 42


def test_awaited_exception_propagates_into_the_sync_code() -> None:
    def task() -> str:
        try:
            await_(fail_after_yield("partner exploded"))
        except Boom as exc:
            # the sync code can carry on awaiting after handling the error
            return f"caught {exc}; then {await_(double(5))}"
        return "not raised"

    assert asyncio.run(drive(task)) == "caught partner exploded; then 10"


def test_unhandled_exception_leaves_drive() -> None:
    def task() -> int:
        return await_(fail_after_yield("unhandled"))

    with pytest.raises(Boom, match="unhandled"):
        asyncio.run(drive(task))


def test_exception_raised_by_the_sync_code_leaves_drive() -> None:
    def task() -> None:
        await_(double(1))
        raise KeyError("sync side")

    with pytest.raises(KeyError, match="sync side"):
        asyncio.run(drive(task))


def test_cancelling_the_driver_cancels_the_awaited_coroutine() -> None:
    state: dict[str, bool] = {}

    async def main() -> None:
        started = asyncio.Event()

        async def long_call() -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                state["coroutine_cancelled"] = True
                raise

        def task() -> None:
            try:
                await_(long_call())
            except asyncio.CancelledError:
                state["sync_saw_cancel"] = True
                raise

        running = asyncio.create_task(drive(task))
        await started.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(main())
    assert state == {"coroutine_cancelled": True, "sync_saw_cancel": True}


def test_a_thousand_drives_are_suspended_at_once() -> None:
    n = 1000
    counters = {"suspended": 0, "max_suspended": 0, "done": 0}

    async def partner_call(i: int) -> int:
        counters["suspended"] += 1
        counters["max_suspended"] = max(counters["max_suspended"], counters["suspended"])
        await asyncio.sleep(0.2)
        counters["suspended"] -= 1
        return i

    def task(i: int) -> int:
        value = await_(partner_call(i))
        counters["done"] += 1
        return value

    async def main() -> list[Any]:
        return await asyncio.gather(*(drive(task, i) for i in range(n)))

    results = asyncio.run(main())
    assert results == list(range(n))
    assert counters["done"] == n
    # all 1,000 were in flight together: the whole run takes ~0.2 s, not 1,000 x 0.2 s
    assert counters["max_suspended"] == n


def test_await_outside_a_task_greenlet_uses_the_background_loop() -> None:
    async def loop_and_thread() -> tuple[asyncio.AbstractEventLoop, str]:
        await asyncio.sleep(0)
        return asyncio.get_running_loop(), threading.current_thread().name

    loop, thread_name = await_(loop_and_thread())
    assert loop is bridge.io_loop()
    assert loop.is_running()
    assert thread_name != threading.current_thread().name
    assert await_(double(21)) == 42
    with pytest.raises(Boom, match="fallback"):
        await_(fail_after_yield("fallback"))


def test_await_in_a_plain_greenlet_also_uses_the_background_loop() -> None:
    def body() -> int:
        assert not isinstance(greenlet.getcurrent(), TaskGreenlet)
        return await_(double(8))

    assert greenlet(body).switch() == 16
