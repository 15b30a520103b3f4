"""The executor's flow control and pauses as pure logic, on a hand-driven clock.

The end-to-end behaviour with the real SDK is in test_executor.py; here are the numbers
(a throttle's burst, a rate limit's window, a pause's timeout) that would take minutes of
real time to show there.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tripkit.devstack.executor.expressions import EVENT_AND_ASYNC, Expression
from tripkit.devstack.executor.flow import (
    Debounce,
    FlowControl,
    FlowState,
    RateLimit,
    Throttle,
)
from tripkit.devstack.executor.waits import CancelOn, Listeners, Pause


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_starts_limit_plus_burst_then_one_per_interval() -> None:
    clock = Clock()
    state = FlowState(clock=clock)
    rule = Throttle(limit=2, period=6.0, burst=1, key=None)
    # Six events at once: three start now, then one every 3 s (period / limit), in order.
    assert [state.throttle_delay("f", rule, {}) for _ in range(6)] == [0, 0, 0, 3, 6, 9]
    clock.now += 60  # idle long enough: the burst is available again
    assert [state.throttle_delay("f", rule, {}) for _ in range(4)] == [0, 0, 0, 3]
    keyed = Throttle(limit=1, period=1.0, burst=0, key=Expression.compile("event.data.u"))
    ann, bob = {"data": {"u": "ann"}}, {"data": {"u": "bob"}}
    assert state.throttle_delay("g", keyed, ann) == 0
    assert state.throttle_delay("g", keyed, bob) == 0  # its own key
    assert state.throttle_delay("g", keyed, ann) == 1


def test_rate_limit_and_idempotency_skip_within_their_windows() -> None:
    clock = Clock()
    state = FlowState(clock=clock)
    limited = FlowControl(rate_limit=RateLimit(limit=2, period=10.0, key=None))
    assert [state.skip_reason("f", limited, {}) == "" for _ in range(3)] == [True, True, False]
    clock.now += 10
    assert state.skip_reason("f", limited, {}) == ""  # a new window
    once = FlowControl(idempotency=Expression.compile("event.data.order"))
    order = {"data": {"order": "o-1"}}
    assert state.skip_reason("f", once, order) == ""
    assert "idempotency" in state.skip_reason("f", once, order)
    assert state.skip_reason("other-fn", once, order) == ""  # per function
    clock.now += 24 * 3600
    assert state.skip_reason("f", once, order) == ""  # forgotten after 24 h


async def test_debounce_timeout_bounds_the_delay() -> None:
    state = FlowState()
    released: list[Any] = []
    rule = Debounce(period=0.3, timeout=0.5, key=None)
    for n in range(12):  # an event every 0.1 s for 1.2 s: never a quiet 0.3 s
        state.debounce("f", rule, n, {}, released.append)
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.6)
    assert len(released) >= 2  # the timeout released runs while events kept coming
    assert released == sorted(released) and released[-1] == 11  # the last event ran last
    state.close()


def test_pauses_match_once_and_expire() -> None:
    clock = Clock()
    listeners = Listeners(clock=clock)
    hits: list[dict[str, Any]] = []
    condition = Expression.compile("async.data.job == event.data.job", EVENT_AND_ASYNC)
    trigger = {"data": {"job": "a"}}
    listeners.add(Pause("run-1", "stop", condition, trigger, hits.append))
    listeners.add(Pause("run-2", "stop", None, trigger, hits.append, expires=clock.now + 5))
    clock.now += 10  # run-2's pause has expired
    assert listeners.deliver("stop", {"data": {"job": "b"}}) == 0
    assert listeners.deliver("stop", {"data": {"job": "a"}}) == 1
    assert listeners.deliver("stop", {"data": {"job": "a"}}) == 0  # once only
    assert hits == [{"data": {"job": "a"}}] and listeners.count() == 0


def test_cancel_on_entries_are_parsed_or_refused() -> None:
    (rule,) = CancelOn.parse_all(
        [{"event": "app/stop", "if": "async.data.id == event.data.id", "timeout": "1h"}]
    )
    assert rule.event == "app/stop" and rule.timeout == 3600.0 and rule.condition is not None
    for bad, message in (
        ([{"event": ""}], "event"),
        ([{"event": "x", "if": "evnt.id"}], "evnt"),
        ([{"event": "x", "timeout": "soon"}], "duration"),
        ([{"event": "x", "match": "data.id"}], "match"),
    ):
        with pytest.raises(ValueError, match=re.escape("cancel[0]") + ".*" + message):
            CancelOn.parse_all(bad)


def test_flow_options_are_parsed_or_refused_by_name() -> None:
    flow = FlowControl.parse(
        {
            "throttle": {"limit": 3, "period": "1m", "burst": 1, "key": "event.data.u"},
            "rateLimit": {"limit": 1, "period": "4h"},
            "debounce": {"period": "5s", "timeout": "1m"},
            "idempotency": "event.data.id",
        }
    )
    assert flow.throttle == Throttle(3, 60.0, 1, flow.throttle.key if flow.throttle else None)
    assert flow.rate_limit is not None and flow.rate_limit.period == 4 * 3600
    assert flow.debounce is not None and flow.debounce.timeout == 60.0
    for bad, message in (
        ({"throttle": {"limit": 0, "period": "1s"}}, "throttle: limit"),
        ({"rateLimit": {"limit": 1, "period": "later"}}, "rateLimit"),
        ({"debounce": {"period": "1s", "key": "event.data."}}, "debounce"),
        ({"throttle": {"limit": 1, "period": "1s", "mode": "x"}}, "throttle.mode"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            FlowControl.parse(bad)
