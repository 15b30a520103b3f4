"""Admission to a connection pool: bounded, fail-fast, cancellation-proof.

Why this exists: under a burst, httpx's pool (httpcore 1.0.x) loses a connection slot
for good whenever a request is cancelled, or gives up waiting for a connection, at the
moment the pool hands it a freshly created one (encode/httpcore#1093). A burst of
timed-out and cancelled Redis calls leaked all 100 slots of the app's REST client; the
process then answered every request with a ``PoolTimeout`` while no TCP connection was
open, until it was restarted. A pool with many waiting requests is also slow: httpcore
scans every waiting request against every connection each time one is released, which
made 200 simultaneous event sends cost more CPU than the rest of the request.

A gate in front of a pool keeps both away:

- it admits at most ``size`` calls, no more than the pool has connections, so the pool
  never has a request waiting for a connection (and never times one out);
- an admitted call runs in a task of its own, which the caller's cancellation does not
  reach: the call ends within its own timeout and then frees its slot;
- a caller that finds every slot taken for ``wait`` seconds gets the ``busy`` error at
  once, instead of queueing behind a stalled service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def _awaited(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


class Gate:
    """At most ``size`` calls in flight; a caller waits at most ``wait`` s for a slot."""

    def __init__(self, size: int, wait: float, *, busy: Callable[[str], Exception]) -> None:
        """``busy(reason)`` builds the error for a caller that found no slot in time."""
        if size < 1 or wait <= 0:
            raise ValueError("a gate needs size >= 1 and wait > 0")
        self.size = size
        self.wait = wait
        self.busy = busy
        self._slots = asyncio.Semaphore(size)
        self._running: set[asyncio.Task[object]] = set()

    @property
    def in_flight(self) -> int:
        """Calls admitted and not finished (including those whose caller left)."""
        return len(self._running)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call()`` once a slot is free; raise the ``busy`` error after ``wait`` s."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise self.busy(
                    f"all {self.size} connections were in use for {self.wait:g} s"
                ) from None
        else:  # a slot is free: taken at once, without arming a timeout (polls are hot)
            await self._slots.acquire()

        # No await between acquire and create_task: the slot always belongs to a task.
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(_awaited(call))
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[T]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled():
            task.exception()  # mark it retrieved: a caller that left must not log it

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for admitted calls; cancel what is left (at close)."""
        pending = set(self._running)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
