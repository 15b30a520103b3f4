"""What the executor remembers: events, runs and their steps, and the JSON it shows.

The ``to_json`` shapes are the dev server's (``/v1/events``, ``/v1/runs``) plus tripkit's
accounting extras; errors everywhere are ``{name, message, stack}`` dicts.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from tripkit.devstack.executor.protocol import RunStatus
from tripkit.devstack.executor.registry import Json, iso


class StepStatus(StrEnum):
    """Where a step stands, in ``/v1/runs`` (tripkit's extra: the dev server has no steps)."""

    PLANNED = "planned"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"  # for an event (step.wait_for_event)
    COMPLETED = "completed"
    FAILED = "failed"


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid() -> str:
    """A ULID like the ones Inngest uses for run and event ids (sortable by time)."""
    return ulid_from(int(time.time() * 1000), os.urandom(10))


def ulid_from(millis: int, entropy: bytes) -> str:
    """The ULID of a 48-bit millisecond time and 80 bits of entropy (Crockford base32)."""
    n = ((millis & (2**48 - 1)) << 80) | int.from_bytes(entropy[:10].rjust(10, b"\0"), "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def error_dict(name: str, message: str, stack: str | None = None) -> dict[str, Json]:
    return {"name": name, "message": message, "stack": stack}


def error_from(raw: Json, fallback: str) -> dict[str, Json]:
    """Normalise an SDK error body to ``{name, message, stack}`` (plus ``code`` if given)."""
    if isinstance(raw, dict):
        out = error_dict(
            str(raw.get("name") or "Error"),
            str(raw.get("message") if raw.get("message") is not None else fallback),
            raw.get("stack") if isinstance(raw.get("stack"), str) else None,
        )
        if isinstance(raw.get("code"), str):
            out["code"] = raw["code"]
        return out
    return error_dict("Error", fallback if raw is None else f"{fallback}: {raw!r}"[:2000])


def memo_error(err: dict[str, Json]) -> dict[str, Json]:
    """What the SDK expects in ``steps`` for a failed step (it raises StepError)."""
    return {"error": {"name": err["name"], "message": err["message"], "stack": err.get("stack")}}


@dataclass
class EventRecord:
    internal_id: str
    id: str
    name: str
    data: dict[str, Json]
    ts: int
    received_at: datetime
    run_ids: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # function id -> why no run (yet)

    def payload(self) -> dict[str, Json]:
        """The event as the SDK receives it (``ts`` an int in ms: the SDK rejects floats)."""
        return {"name": self.name, "data": self.data, "id": self.id, "ts": self.ts}

    def to_json(self) -> dict[str, Json]:
        return {
            "internal_id": self.internal_id,
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "ts": self.ts,
            "received_at": iso(self.received_at),
            "run_ids": list(self.run_ids),
            "skipped": dict(self.skipped),
        }


@dataclass
class StepRecord:
    id: str
    name: str
    op: str
    status: StepStatus = StepStatus.PLANNED
    attempts: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: dict[str, Json] | None = None

    def to_json(self) -> dict[str, Json]:
        return {
            "id": self.id,
            "name": self.name,
            "op": self.op,
            "status": self.status,
            "attempts": self.attempts,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "error": self.error,
        }


@dataclass
class RunRecord:
    run_id: str
    function_id: str
    function_name: str
    app_id: str
    event: EventRecord
    started_at: datetime
    status: RunStatus = RunStatus.RUNNING
    ended_at: datetime | None = None
    output: Json = None
    error: dict[str, Json] | None = None
    memo: dict[str, Json] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    sdk_calls: int = 0
    function_errors: int = 0
    unreachable_retries: int = 0
    waiting_for_slot: int = 0  # calls of this run queued behind a concurrency limit
    throttle_delay: float = 0.0  # seconds the run waits behind its throttle before starting
    batch: list[EventRecord] = field(default_factory=list)  # batch_events: all the events
    calls_in_flight: int = 0  # a cancelled run lets these finish (a step is atomic)
    first_call_at: datetime | None = None  # when the run left the queue (timeouts.start)
    cancel_reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once finished
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.status != RunStatus.RUNNING

    @property
    def events(self) -> list[EventRecord]:
        """What the SDK gets as ``events``: the batch, or the one triggering event."""
        return self.batch or [self.event]

    def to_json(self) -> dict[str, Json]:
        """The dev server's run fields, plus tripkit's accounting extras."""
        return {
            "run_id": self.run_id,
            "function_id": self.function_id,
            "function_name": self.function_name,
            "app_id": self.app_id,
            "event_id": self.event.internal_id,
            "event_name": self.event.name,
            "event_ids": [e.internal_id for e in self.events],
            "status": self.status,
            "run_started_at": iso(self.started_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "output": self.output,
            "error": self.error,
            "step_count": len(self.stack),
            "steps": [s.to_json() for s in self.steps.values()],
            "sdk_calls": self.sdk_calls,
            "function_errors": self.function_errors,
            "unreachable_retries": self.unreachable_retries,
            "queued": self.waiting_for_slot > 0 or self.throttle_delay > 0,
            "cancel_reason": self.cancel_reason,
        }
