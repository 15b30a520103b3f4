"""Inngest's expressions (CEL), compiled at sync and evaluated against events.

Inngest writes every condition and key as a CEL expression over the variables it
provides: ``event`` (the run's triggering event) and, for ``cancelOn`` and
``step.wait_for_event``, ``async`` (the incoming event being matched). The real server
evaluates them with cel-go; this module uses ``common-expression-language`` (Rust's
cel-interpreter) because it compares numbers across int and double the way cel-go does:
JSON has one number type, so ``event.data.n > 1.5`` with ``n: 2`` must be true, which
cel-python refuses as a missing overload.

A syntax error or an unknown variable is refused when the function syncs
(:class:`ExpressionError`, with the CEL message). At run time an expression that cannot
be evaluated (a missing field, a type mismatch) matches nothing, as on Inngest.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import cel

Json = Any
log = logging.getLogger("tripkit.devstack.executor")

#: The variables of an expression on the triggering event only (trigger ``if``, keys).
EVENT_ONLY = frozenset({"event"})
#: The variables of an expression that matches an incoming event against the run's.
EVENT_AND_ASYNC = frozenset({"event", "async"})

# Comprehension macros bind their own variable (``list.exists(x, x > 1)``).
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


class ExpressionError(ValueError):
    """An expression Inngest would refuse; the message says what to fix."""


@dataclass(frozen=True)
class Expression:
    """One compiled CEL expression and the variables it may use."""

    source: str
    program: cel.Program = field(repr=False, compare=False)
    variables: frozenset[str] = EVENT_ONLY

    @classmethod
    def compile(cls, source: str, variables: frozenset[str] = EVENT_ONLY) -> Expression:
        if not source.strip():
            raise ExpressionError("the expression is empty")
        try:
            program = cel.compile(source)
        except Exception as err:  # the binding raises ValueError, or others on odd input
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            where = "ERROR: <input>:"  # the binding repeats the source before the position
            if where in first:
                first = "at " + first.split(where, 1)[1].strip()
            raise ExpressionError(f"{source!r} is not a valid CEL expression: {first}") from None
        bound = set(_MACRO_VARIABLE.findall(source))
        unknown = sorted(set(program.variables()) - variables - bound)
        if unknown:
            allowed = " and ".join(sorted(variables))
            raise ExpressionError(
                f"{source!r} uses {', '.join(unknown)}: an expression here can use only {allowed}"
            )
        return cls(source, program, variables)

    def evaluate(self, **values: Json) -> Json:
        """The expression's value; ExpressionError if CEL cannot evaluate it here."""
        context = {name: values.get(name) for name in self.variables}
        try:
            return self.program.execute(context)
        except Exception as err:
            raise ExpressionError(f"{self.source!r} failed: {err}") from None

    def matches(self, **values: Json) -> bool:
        """True only when the expression evaluates to ``true``; errors match nothing."""
        try:
            result = self.evaluate(**values)
        except ExpressionError as err:
            log.debug("%s: treated as false", err)
            return False
        return result is True

    def key(self, **values: Json) -> str:
        """The value as a key string (concurrency, throttle, ...): equal values, equal keys.

        A key that cannot be evaluated is the empty key, so such runs share one queue
        rather than each escaping the limit.
        """
        try:
            result = self.evaluate(**values)
        except ExpressionError as err:
            log.warning("%s: using the empty key", err)
            return ""
        if isinstance(result, str):
            return result
        return json.dumps(result, sort_keys=True, default=str)
