"""The gate's rules, as pure asyncio logic (no I/O): bounded, fail-fast, cancellation-proof.

The same rules under real load, on real processes, are in tests/transport/test_burst.py.
"""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from tripkit.gate import Gate


class Busy(Exception):
    pass


def gate(size: int = 2, wait: float = 0.2) -> Gate:
    return Gate(size, wait, busy=Busy)


async def test_at_most_size_calls_run_at_once() -> None:
    g = gate(size=3, wait=5)
    running = peak = 0

    async def call() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    await asyncio.gather(*(g.run(call) for _ in range(20)))
    assert peak == 3
    assert g.in_flight == 0


async def test_a_caller_that_finds_no_slot_gets_busy_after_the_wait() -> None:
    g = gate(size=1, wait=0.2)
    release = asyncio.Event()
    holder = asyncio.create_task(g.run(release.wait))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(Busy, match=r"all 1 connections were in use for 0\.2 s"):
        await g.run(release.wait)
    assert 0.15 < time.monotonic() - started < 1.0
    release.set()
    await holder
    assert await g.run(lambda: asyncio.sleep(0, "free again")) == "free again"


async def test_a_cancelled_caller_does_not_cancel_its_call_and_the_slot_comes_back() -> None:
    g = gate(size=1, wait=0.5)
    finished = asyncio.Event()

    async def call() -> str:
        await asyncio.sleep(0.05)
        finished.set()
        return "done"

    caller = asyncio.create_task(g.run(call))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert g.in_flight == 1  # the call goes on without its caller
    await asyncio.wait_for(finished.wait(), 1)
    await asyncio.sleep(0)
    assert g.in_flight == 0
    assert await g.run(call) == "done"


async def test_a_caller_cancelled_while_waiting_takes_no_slot() -> None:
    g = gate(size=1, wait=5)
    release = asyncio.Event()
    holder = asyncio.create_task(g.run(release.wait))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(g.run(lambda: asyncio.sleep(0)))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    results = await asyncio.gather(*(g.run(lambda: asyncio.sleep(0, 1)) for _ in range(5)))
    assert results == [1] * 5
    assert g.in_flight == 0


async def test_errors_reach_the_caller_and_free_the_slot() -> None:
    g = gate(size=1)

    async def fails() -> None:
        raise ValueError("boom")

    for _ in range(3):
        with pytest.raises(ValueError, match="boom"):
            await g.run(fails)
    assert g.in_flight == 0


async def test_an_error_nobody_waits_for_is_not_reported_as_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = gate(size=1)

    async def fails_later() -> None:
        await asyncio.sleep(0.02)
        raise ValueError("nobody listens")

    caller = asyncio.create_task(g.run(fails_later))
    await asyncio.sleep(0.005)
    caller.cancel()
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)
    assert "exception was never retrieved" not in caplog.text


async def test_drain_waits_for_calls_then_cancels_the_rest() -> None:
    g = gate(size=2, wait=1)
    quick = asyncio.create_task(g.run(lambda: asyncio.sleep(0.01)))
    stuck = asyncio.create_task(g.run(lambda: asyncio.sleep(60)))
    await asyncio.sleep(0)
    started = time.monotonic()
    await g.drain(0.2)
    assert time.monotonic() - started < 1
    assert g.in_flight == 0
    await quick
    with pytest.raises(asyncio.CancelledError):
        await stuck


def test_a_gate_needs_a_size_and_a_wait() -> None:
    with pytest.raises(ValueError):
        Gate(0, 1, busy=Busy)
    with pytest.raises(ValueError):
        Gate(1, 0, busy=Busy)
