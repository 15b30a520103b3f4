"""``batch_events``: many events, one run, as Inngest batches them.

A batched function's events wait in a buffer; the buffer becomes one run when it holds
``maxSize`` events or when its oldest event has waited ``timeout``, whichever comes
first. The run's ``events`` is the batch and ``event`` its first. With a ``key`` (CEL
over ``event``) each key value has its own buffer; with an ``if``, only the events it
matches are batched and the others start a run of their own at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tripkit.devstack.executor.durations import parse_duration
from tripkit.devstack.executor.expressions import Expression, Json

T = TypeVar("T")
MAX_BATCH_SIZE = 100  # Inngest's documented ceiling for maxSize


@dataclass(frozen=True)
class BatchConfig:
    max_size: int
    timeout: float
    key: Expression | None = None
    condition: Expression | None = None  # batchEvents.if

    @classmethod
    def parse(cls, raw: object) -> BatchConfig:
        """ValueError with what to fix for a ``batchEvents`` value we cannot honour."""
        if not isinstance(raw, dict):
            raise ValueError("must be an object {maxSize, timeout, key?, if?}")
        unknown = sorted(set(raw) - {"maxSize", "timeout", "key", "if"})
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        compiled: dict[str, Expression | None] = {}
        for name in ("key", "if"):
            source = raw.get(name)
            if source in (None, ""):
                compiled[name] = None
            elif not isinstance(source, str):
                raise ValueError(f"batchEvents.{name} must be a CEL expression (a string)")
            else:
                compiled[name] = Expression.compile(source)
        size = raw.get("maxSize")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
            raise ValueError(f"batchEvents.maxSize must be an integer from 1 to {MAX_BATCH_SIZE}")
        timeout = raw.get("timeout")
        if not isinstance(timeout, str):
            raise ValueError("batchEvents.timeout is required, a duration such as '5s'")
        return cls(size, parse_duration(timeout), compiled["key"], compiled["if"])

    def batches(self, event: dict[str, Json]) -> bool:
        """Whether ``event`` goes into a batch (``if``); if not, it runs on its own."""
        return self.condition is None or self.condition.matches(event=event)

    def buffer_key(self, event: dict[str, Json]) -> str:
        return "" if self.key is None else self.key.key(event=event)


class Batcher(Generic[T]):
    """Per-function buffers; ``flush(function_id, items)`` receives each full batch."""

    def __init__(self, flush: Callable[[str, list[T]], None]) -> None:
        self._flush_to = flush
        self._buffers: dict[tuple[str, str], list[T]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def add(self, function_id: str, config: BatchConfig, item: T, event: dict[str, Json]) -> bool:
        """Buffer ``item`` (whose payload is ``event``); False if it is not for batching."""
        if not config.batches(event):
            return False
        buffer_id = (function_id, config.buffer_key(event))
        buffer = self._buffers.setdefault(buffer_id, [])
        buffer.append(item)
        if len(buffer) >= config.max_size:
            self.flush(buffer_id)
        elif len(buffer) == 1:
            self._timers[buffer_id] = asyncio.get_running_loop().call_later(
                config.timeout, self.flush, buffer_id
            )
        return True

    def flush(self, buffer_id: tuple[str, str]) -> None:
        timer = self._timers.pop(buffer_id, None)
        if timer is not None:
            timer.cancel()
        items = self._buffers.pop(buffer_id, [])
        if items:
            self._flush_to(buffer_id[0], items)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._buffers.clear()
