"""Runs waiting for an event: ``step.wait_for_event`` and a function's ``cancelOn``.

Both are Inngest "pauses": a run names an event and optionally an ``if`` expression over
``event`` (its own triggering event) and ``async`` (the incoming one), valid until a
timeout. Every event the executor receives is offered to the pauses first
(:meth:`Listeners.deliver`); a match is handed to the pause's callback once and the
pause is gone. Only events received after the pause began can match, as on Inngest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tripkit.devstack.executor.durations import parse_duration
from tripkit.devstack.executor.expressions import EVENT_AND_ASYNC, Expression, ExpressionError

Json = Any


@dataclass(frozen=True)
class CancelOn:
    """One ``cancel`` entry of a function: the event that cancels its runs."""

    event: str
    condition: Expression | None
    timeout: float | None  # seconds after the run started; None: for the whole run

    @classmethod
    def parse_all(cls, raw: Json) -> tuple[CancelOn, ...]:
        """The function's ``cancel`` list; ValueError naming the entry on what we refuse."""
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise ValueError(f"cancel must be a list, not {raw!r}")
        out = []
        for index, entry in enumerate(raw):
            where = f"cancel[{index}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be an object, not {entry!r}")
            extra = sorted(set(entry) - {"event", "if", "timeout"})
            if extra:
                raise ValueError(f"{where}.{extra[0]} is not supported by tripkit's local executor")
            name = entry.get("event")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}.event must be an event name")
            condition = entry.get("if")
            timeout = entry.get("timeout")
            try:
                expr = None if condition is None else Expression.compile(condition, EVENT_AND_ASYNC)
                seconds = None if timeout is None else parse_duration(str(timeout))
            except (ExpressionError, ValueError) as err:
                raise ValueError(f"{where}: {err}") from None
            out.append(cls(name, expr, seconds))
        return tuple(out)

    def to_json(self) -> dict[str, Json]:
        return {
            "event": self.event,
            "if": None if self.condition is None else self.condition.source,
            "timeout": self.timeout,
        }


@dataclass(eq=False)
class Pause:
    """A run waiting for an event named ``event`` that satisfies ``condition``."""

    run_id: str
    event: str
    condition: Expression | None
    trigger: dict[str, Json]  # the run's own event: ``event`` in the condition
    on_match: Callable[[dict[str, Json]], None]
    expires: float | None = None  # monotonic time; None: until removed

    def matches(self, name: str, payload: dict[str, Json], now: float) -> bool:
        if name != self.event or (self.expires is not None and now >= self.expires):
            return False
        if self.condition is None:
            return True
        return self.condition.matches(event=self.trigger, **{"async": payload})


@dataclass
class Listeners:
    """Every pause of every run, by the event name it waits for."""

    clock: Callable[[], float] = time.monotonic
    _by_event: dict[str, list[Pause]] = field(default_factory=dict)

    def add(self, pause: Pause) -> Pause:
        self._by_event.setdefault(pause.event, []).append(pause)
        return pause

    def remove(self, pause: Pause) -> None:
        pauses = self._by_event.get(pause.event, [])
        if pause in pauses:
            pauses.remove(pause)
        if not pauses:
            self._by_event.pop(pause.event, None)

    def remove_run(self, run_id: str) -> None:
        for pauses in list(self._by_event.values()):
            for pause in [p for p in pauses if p.run_id == run_id]:
                self.remove(pause)

    def deliver(self, name: str, payload: dict[str, Json]) -> int:
        """Hand the event to every pause it satisfies (each at most once); how many."""
        now = self.clock()
        pauses = list(self._by_event.get(name, []))
        hits = 0
        for pause in pauses:
            if pause not in self._by_event.get(name, []):
                continue  # removed by an earlier match (a cancelled run drops all its pauses)
            if pause.expires is not None and now >= pause.expires:
                self.remove(pause)
            elif pause.matches(name, payload, now):
                self.remove(pause)
                pause.on_match(payload)
                hits += 1
        return hits

    def count(self) -> int:
        return sum(len(p) for p in self._by_event.values())
