"""The executor's CEL expressions and duration strings, as pure logic."""

from __future__ import annotations

import pytest

from tripkit.devstack.executor.durations import parse_duration
from tripkit.devstack.executor.expressions import (
    EVENT_AND_ASYNC,
    Expression,
    ExpressionError,
)


def test_any_cel_over_the_event() -> None:
    assert Expression.compile("event.data.n > 1").matches(event={"data": {"n": 2}})
    assert not Expression.compile("event.data.n > 1").matches(event={"data": {"n": 1}})
    # JSON has one number type: int and double compare as cel-go compares them.
    assert Expression.compile("event.data.n > 1.5").matches(event={"data": {"n": 2}})
    assert Expression.compile("event.data.n == 1").matches(event={"data": {"n": 1.0}})
    both = Expression.compile("event.data.a == 'x' && event.data.tags.exists(t, t == 'y')")
    assert both.matches(event={"data": {"a": "x", "tags": ["z", "y"]}})
    assert Expression.compile("has(event.data.x)").matches(event={"data": {"x": None}})


def test_a_failing_evaluation_matches_nothing() -> None:
    missing = Expression.compile("event.data.user == 'ann'")
    assert not missing.matches(event={"data": {}})
    assert not Expression.compile("event.data.n > 'a'").matches(event={"data": {"n": 1}})
    assert not Expression.compile("event.data.n").matches(event={"data": {"n": 1}})  # not a bool
    with pytest.raises(ExpressionError, match="failed"):
        missing.evaluate(event={"data": {}})


def test_async_is_the_incoming_event() -> None:
    expr = Expression.compile("async.data.user == event.data.user", EVENT_AND_ASYNC)
    assert expr.matches(event={"data": {"user": "a"}}, **{"async": {"data": {"user": "a"}}})
    assert not expr.matches(event={"data": {"user": "a"}}, **{"async": {"data": {"user": "b"}}})


def test_bad_expressions_are_refused_with_the_reason() -> None:
    with pytest.raises(ExpressionError, match="not a valid CEL expression"):
        Expression.compile("event.data.n >")
    with pytest.raises(ExpressionError, match="uses evnt"):
        Expression.compile("evnt.data.n > 1")
    with pytest.raises(ExpressionError, match="uses async"):
        Expression.compile("async.data.n == event.data.n")  # only event in a trigger
    with pytest.raises(ExpressionError, match="empty"):
        Expression.compile("  ")


def test_keys() -> None:
    key = Expression.compile("event.data.user")
    assert key.key(event={"data": {"user": "ann"}}) == "ann"
    assert key.key(event={"data": {"user": {"id": 1}}}) == '{"id": 1}'
    assert key.key(event={"data": {}}) == ""  # unevaluable: the shared empty key
    assert Expression.compile('"openai"').key(event={}) == "openai"


def test_durations() -> None:
    assert parse_duration("30s") == 30.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("2d") == 172800.0 and parse_duration("1w") == 604800.0
    assert parse_duration("500ms") == 0.5
    for bad in ("", "10", "5 minutes", "1x", "s"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
