"""A function's ``timeouts``: how long a run may wait to start, and to finish.

As Inngest applies them: ``start`` counts from when the run was scheduled until its first
call to the app begins (waiting for a concurrency slot counts); ``finish`` counts from
that first call. A run past either is cancelled (``inngest/function.cancelled``); a call
already in flight completes, and nothing runs after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tripkit.devstack.executor.durations import parse_duration


@dataclass(frozen=True)
class RunTimeouts:
    start: float | None
    finish: float | None

    @classmethod
    def parse(cls, raw: object) -> RunTimeouts:
        """ValueError with what to fix for a ``timeouts`` value we cannot read."""
        if not isinstance(raw, dict):
            raise ValueError("must be an object {start?, finish?}")
        unknown = sorted(set(raw) - {"start", "finish"})
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}: only start and finish")
        values: dict[str, float | None] = {}
        for name in ("start", "finish"):
            text = raw.get(name)
            if text is None:
                values[name] = None
            elif not isinstance(text, str):
                raise ValueError(f"{name} must be a duration such as '30s'")
            else:
                values[name] = parse_duration(text)
        return cls(values["start"], values["finish"])
