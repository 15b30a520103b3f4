"""Whether and when a run may start: Inngest's debounce, idempotency, rate limit and throttle.

Each option is read from the function's sync config (:meth:`FlowControl.parse`) and
applied as Inngest documents it, per function and per value of its optional ``key``
expression:

- ``debounce``: hold the event; each new one restarts the ``period``; the run starts with
  the last event once the period passes quietly, or when ``timeout`` since the first
  event is reached.
- ``idempotency``: a key seen in the last 24 h starts no run (the event is skipped).
- ``rateLimit``: at most ``limit`` runs start per ``period``; events over it are skipped.
- ``throttle``: at most ``limit`` runs start per ``period`` (plus ``burst`` at once);
  runs over it are queued, first in first out, and start later (GCRA, as Inngest's
  queue does). Nothing is dropped.

State is in memory and bounded; the engine owns one :class:`FlowState`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tripkit.devstack.executor.durations import parse_duration
from tripkit.devstack.executor.expressions import Expression, ExpressionError

Json = Any
IDEMPOTENCY_WINDOW = 24 * 3600.0
MAX_KEYS = 100_000  # remembered keys per kind; beyond that the oldest are forgotten


def _positive_int(raw: dict[str, Json], name: str) -> int:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


def _duration(raw: dict[str, Json], name: str, *, required: bool) -> float | None:
    value = raw.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a duration string like '10s', not {value!r}")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be longer than zero, not {value!r}")
    return seconds


def _key(raw: dict[str, Json]) -> Expression | None:
    key = raw.get("key")
    if key is None:
        return None
    if not isinstance(key, str):
        raise ValueError(f"key must be a CEL expression string, not {key!r}")
    return Expression.compile(key)


def _only(raw: Json, option: str, allowed: set[str]) -> dict[str, Json]:
    if not isinstance(raw, dict):
        raise ValueError(f"{option} must be an object, not {raw!r}")
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{option}.{extra[0]} is not supported by tripkit's local executor")
    return raw


@dataclass(frozen=True)
class RateLimit:
    limit: int
    period: float
    key: Expression | None


@dataclass(frozen=True)
class Throttle:
    limit: int
    period: float
    burst: int
    key: Expression | None


@dataclass(frozen=True)
class Debounce:
    period: float
    timeout: float | None
    key: Expression | None


@dataclass(frozen=True)
class FlowControl:
    """A function's start-time options; ``None`` where the function sets none."""

    debounce: Debounce | None = None
    idempotency: Expression | None = None
    rate_limit: RateLimit | None = None
    throttle: Throttle | None = None

    @classmethod
    def parse(cls, config: dict[str, Json]) -> FlowControl:
        """From the function's sync config; ValueError naming the option on what we refuse."""
        debounce = rate_limit = throttle = None
        idempotency = None
        option = ""
        try:
            option = "debounce"
            if config.get(option) is not None:
                raw = _only(config[option], option, {"period", "timeout", "key"})
                period = _duration(raw, "period", required=True)
                assert period is not None
                timeout = _duration(raw, "timeout", required=False)
                debounce = Debounce(period, timeout, _key(raw))
            option = "idempotency"
            if config.get(option) is not None:
                if not isinstance(config[option], str):
                    raise ValueError(f"must be a CEL expression string, not {config[option]!r}")
                idempotency = Expression.compile(config[option])
            option = "rateLimit"
            if config.get(option) is not None:
                raw = _only(config[option], option, {"limit", "period", "key"})
                period = _duration(raw, "period", required=True)
                assert period is not None
                rate_limit = RateLimit(_positive_int(raw, "limit"), period, _key(raw))
            option = "throttle"
            if config.get(option) is not None:
                raw = _only(config[option], option, {"limit", "period", "burst", "key"})
                period = _duration(raw, "period", required=True)
                assert period is not None
                burst = 0 if raw.get("burst") is None else _positive_int(raw, "burst")
                throttle = Throttle(_positive_int(raw, "limit"), period, burst, _key(raw))
        except ExpressionError as err:
            raise ValueError(f"{option}: {err}") from None
        except ValueError as err:
            message = str(err)
            raise ValueError(
                message if message.startswith(option) else f"{option}: {message}"
            ) from None
        return cls(debounce, idempotency, rate_limit, throttle)

    def to_json(self) -> dict[str, Json]:
        out: dict[str, Json] = {}
        if self.debounce:
            d = self.debounce
            out["debounce"] = {"period": d.period, "timeout": d.timeout, "key": _src(d.key)}
        if self.idempotency:
            out["idempotency"] = self.idempotency.source
        if self.rate_limit:
            r = self.rate_limit
            out["rate_limit"] = {"limit": r.limit, "period": r.period, "key": _src(r.key)}
        if self.throttle:
            t = self.throttle
            out["throttle"] = {
                "limit": t.limit,
                "period": t.period,
                "burst": t.burst,
                "key": _src(t.key),
            }
        return out


def _src(expr: Expression | None) -> str | None:
    return None if expr is None else expr.source


def _key_of(expr: Expression | None, event: dict[str, Json]) -> str:
    return "" if expr is None else expr.key(event=event)


@dataclass
class _Pending:
    """A debounced function's held event, and when its run is due."""

    event: Any  # the engine's EventRecord; typed loosely to keep this module standalone
    first_at: float
    handle: asyncio.TimerHandle | None = None


@dataclass
class FlowState:
    """The counters and timers behind :class:`FlowControl`, for every function."""

    clock: Callable[[], float] = time.monotonic
    _seen: OrderedDict[tuple[str, str], float] = field(default_factory=OrderedDict)
    _starts: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _tat: dict[tuple[str, str], float] = field(default_factory=dict)
    _pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)

    def debounce(
        self,
        function_id: str,
        rule: Debounce,
        event: Any,
        payload: dict[str, Json],
        release: Callable[[Any], None],
    ) -> Any:
        """Hold ``event``; ``release(last event)`` runs when the debounce period ends.

        Returns the event this one replaces (it will start no run), or None.
        """
        slot = (function_id, _key_of(rule.key, payload))
        now = self.clock()
        pending = self._pending.get(slot)
        superseded = None
        if pending is None:
            pending = self._pending[slot] = _Pending(event, now)
        else:
            superseded, pending.event = pending.event, event
            if pending.handle is not None:
                pending.handle.cancel()
        delay = rule.period
        if rule.timeout is not None:
            delay = max(0.0, min(delay, pending.first_at + rule.timeout - now))

        def fire() -> None:
            if self._pending.get(slot) is pending:
                del self._pending[slot]
                release(pending.event)

        pending.handle = asyncio.get_running_loop().call_later(delay, fire)
        return superseded

    def skip_reason(self, function_id: str, flow: FlowControl, payload: dict[str, Json]) -> str:
        """Why this event starts no run ("" when it does); counts the run when it does."""
        now = self.clock()
        idem: tuple[str, str] | None = None
        if flow.idempotency is not None:
            idem = (function_id, flow.idempotency.key(event=payload))
            self._prune_seen(now)
            if idem in self._seen:
                return f"idempotency key {idem[1]!r} already started a run in the last 24 h"
        if flow.rate_limit is not None:
            rule = flow.rate_limit
            slot = (function_id, _key_of(rule.key, payload))
            starts = self._starts.setdefault(slot, deque())
            while starts and now - starts[0] >= rule.period:
                starts.popleft()
            if len(starts) >= rule.limit:
                return f"rate limit of {rule.limit} per {rule.period:g} s reached"
            starts.append(now)
            if len(self._starts) > MAX_KEYS:
                self._starts = {k: v for k, v in self._starts.items() if v}
        if idem is not None:
            self._seen[idem] = now
            while len(self._seen) > MAX_KEYS:
                self._seen.popitem(last=False)
        return ""

    def throttle_delay(self, function_id: str, rule: Throttle, payload: dict[str, Json]) -> float:
        """Seconds until a run of this function for this event may start (GCRA, FIFO).

        ``limit + burst`` runs may start at once; after that one every ``period / limit``.
        The slot is reserved now, so runs start in the order their events arrived.
        """
        slot = (function_id, _key_of(rule.key, payload))
        now = self.clock()
        interval = rule.period / rule.limit
        tolerance = (rule.limit + rule.burst - 1) * interval
        tat = max(self._tat.get(slot, now), now)
        start = max(now, tat - tolerance)
        self._tat[slot] = tat + interval
        if len(self._tat) > MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return start - now

    def _prune_seen(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if now - oldest < IDEMPOTENCY_WINDOW:
                break
            self._seen.popitem(last=False)

    def close(self) -> None:
        """Drop held debounces (the executor is stopping)."""
        for pending in self._pending.values():
            if pending.handle is not None:
                pending.handle.cancel()
        self._pending.clear()
