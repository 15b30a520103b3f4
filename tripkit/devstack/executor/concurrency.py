"""The queues that enforce functions' ``concurrency`` limits, as Inngest applies them.

Each SDK call holds a slot of every queue its function's limits name (see
:meth:`~tripkit.devstack.executor.engine.Engine.queues_of`); calls beyond a limit wait,
the oldest run first. A run between steps (sleeping, backing off) holds none.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from tripkit.devstack.executor.registry import Json


class SlotQueue:
    """One concurrency queue: at most ``limit`` calls at once; waiters are served by
    priority (the run's start time: oldest run first), then in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.peak = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiters if not fut.done())

    async def acquire(self, priority: float) -> None:
        if self.active < self.limit and self.waiting == 0:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted, but the run was cancelled before it could use it
            else:
                fut.cancel()
            raise

    def release(self) -> None:
        self.active -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters (after a release, or when the limit was raised)."""
        while self._waiters and self.active < self.limit:
            _, _, fut = heapq.heappop(self._waiters)
            if fut.done():
                continue
            self._take()
            fut.set_result(None)

    def _take(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)

    def to_json(self) -> dict[str, Json]:
        return {
            "limit": self.limit,
            "active": self.active,
            "waiting": self.waiting,
            "peak": self.peak,
        }
