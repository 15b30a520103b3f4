"""What an app registered with the local executor, and which events start its functions.

The SDK's sync body (``POST /fn/register``) is validated here and turned into
:class:`FunctionEntry` values: composite id, runtime URL, retry count and triggers. Event
triggers match by name (a trailing ``*`` matches a prefix) and by their ``if``
expression (any CEL over ``event``, see expressions.py). Cron triggers are parsed here
and fired by schedule.py.

Flow control: ``concurrency`` (see :class:`ConcurrencyLimit`), ``debounce``,
``idempotency``, ``rateLimit`` and ``throttle`` (flow.py), ``cancel`` (waits.py),
``timeouts`` (timeouts.py) and ``batchEvents`` (batching.py) are read here and enforced
by the engine. The options in :data:`UNSUPPORTED_OPTIONS` are refused at registration
with the function's id and the option's name: accepting and ignoring them would make a
local run behave unlike Inngest.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tripkit.devstack.executor.batching import BatchConfig
from tripkit.devstack.executor.expressions import Expression
from tripkit.devstack.executor.flow import FlowControl
from tripkit.devstack.executor.protocol import RESERVED_EVENT_PREFIX, InternalEvent
from tripkit.devstack.executor.schedule import CronSchedule
from tripkit.devstack.executor.timeouts import RunTimeouts
from tripkit.devstack.executor.waits import CancelOn

Json = Any
DEFAULT_RETRIES = 4  # what Inngest assumes when a function does not say


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """Timestamps as the dev server writes them: UTC, milliseconds, ``Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Runtime(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "http"
    url: str = Field(min_length=1)


class _Retries(BaseModel):
    model_config = ConfigDict(extra="allow")
    attempts: int = Field(ge=0, le=1000)


class _StepConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    runtime: _Runtime
    retries: _Retries | None = None


class _TriggerConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    event: str | None = Field(default=None, min_length=1)
    expression: str | None = None
    cron: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _TriggerConfig:
        if (self.event is None) == (self.cron is None):
            raise ValueError("a trigger has either 'event' or 'cron'")
        return self


class _ConcurrencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(ge=1, le=100_000)
    key: str | None = None
    scope: str | None = None


class _FunctionConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    name: str | None = None
    triggers: list[_TriggerConfig] = Field(min_length=1)
    steps: dict[str, _StepConfig]
    concurrency: list[_ConcurrencyConfig] | None = Field(default=None, max_length=2)

    @model_validator(mode="after")
    def _has_step(self) -> _FunctionConfig:
        if "step" not in self.steps:
            raise ValueError("steps.step (the runtime entry) is missing")
        return self


class SyncBody(BaseModel):
    """The body the SDK POSTs to /fn/register (only the fields we act on are typed)."""

    model_config = ConfigDict(extra="allow")
    appname: str = Field(min_length=1)
    url: str = Field(min_length=1)
    functions: list[_FunctionConfig] = Field(min_length=1)


#: Function options this executor does not implement, by their sync-body name.
UNSUPPORTED_OPTIONS = (
    "priority",
    "singleton",
)


@dataclass(frozen=True)
class ConcurrencyLimit:
    """One of a function's ``concurrency`` entries, as Inngest applies it.

    At most ``limit`` SDK calls (each executing step, or code between steps) run at once
    for one *queue*. Without a key the queue is the function (``scope`` ``fn``); a key
    (any CEL expression over ``event``, e.g. ``event.data.user_id`` or ``"openai"``)
    splits it per value. With scope ``env`` or ``account`` the queue is shared by every
    function that uses the same key (locally there is one environment and one account).
    """

    limit: int
    scope: str
    key: Expression | None

    @classmethod
    def parse(cls, raw: _ConcurrencyConfig) -> ConcurrencyLimit:
        scope = raw.scope or "fn"
        if scope not in ("fn", "env", "account"):
            raise ValueError(f"scope must be fn, env or account, not {raw.scope!r}")
        if scope != "fn" and raw.key is None:
            raise ValueError(f"a concurrency limit with scope {scope!r} needs a key")
        key = Expression.compile(raw.key) if raw.key is not None else None
        return cls(raw.limit, scope, key)

    def queue(self, function_id: str, event: dict[str, Json]) -> str:
        """The name of the queue an SDK call of ``function_id`` for ``event`` waits in."""
        owner = function_id if self.scope == "fn" else self.scope
        if self.key is None:
            return f"{owner}"
        return f"{owner}|{self.key.source}={json.dumps(self.key.key(event=event))}"


@dataclass(frozen=True)
class Trigger:
    event: str | None
    expression: Expression | None
    cron: CronSchedule | None

    def matches(self, name: str, event: dict[str, Json]) -> bool:
        if self.event is None:
            return False  # a cron trigger: the scheduler starts its runs
        if self.event.endswith("*"):
            if not name.startswith(self.event[:-1]):
                return False
        elif name != self.event:
            return False
        return self.expression is None or self.expression.matches(event=event)


@dataclass
class FunctionEntry:
    id: str
    name: str
    app: str
    url: str
    triggers: list[Trigger]
    retries: int
    config: dict[str, Json]
    registered_at: datetime
    concurrency: tuple[ConcurrencyLimit, ...] = ()
    timeouts: RunTimeouts | None = None
    batch: BatchConfig | None = None
    flow: FlowControl = field(default_factory=FlowControl)
    cancel: tuple[CancelOn, ...] = ()

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def to_json(self) -> dict[str, Json]:
        return {
            "id": self.id,
            "name": self.name,
            "app_id": self.app,
            "url": self.url,
            "triggers": self.config.get("triggers", []),
            "retries": self.retries,
            "max_attempts": self.max_attempts,
            "concurrency": [
                {"limit": c.limit, "scope": c.scope, "key": c.key and c.key.source}
                for c in self.concurrency
            ],
            **self.flow.to_json(),
            "cancel": [c.to_json() for c in self.cancel],
            "registered_at": iso(self.registered_at),
        }


def entries_from(body: SyncBody, raw: dict[str, Json]) -> list[FunctionEntry]:
    """Turn a validated sync body into registry entries; ValueError on what we refuse."""
    seen: set[str] = set()
    entries: list[FunctionEntry] = []
    registered_at = now_utc()
    for index, fn in enumerate(body.functions):
        if fn.id in seen:
            raise ValueError(f"functions[{index}].id: duplicate function id {fn.id!r}")
        seen.add(fn.id)
        step = fn.steps["step"]
        parsed = urllib.parse.urlsplit(step.runtime.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"functions[{index}].steps.step.runtime.url: not an http(s) URL: "
                f"{step.runtime.url!r}"
            )
        config = raw["functions"][index]
        where = f"functions[{index}] ({fn.id})"
        used = [name for name in UNSUPPORTED_OPTIONS if config.get(name) not in (None, [], {})]
        if used:
            raise ValueError(
                f"{where}: {', '.join(used)} "
                f"{'is' if len(used) == 1 else 'are'} not implemented by tripkit's local "
                "executor; remove the option to run locally"
            )
        try:
            timeouts = RunTimeouts.parse(config["timeouts"]) if config.get("timeouts") else None
        except ValueError as err:
            raise ValueError(f"{where}: timeouts: {err}") from None
        try:
            batch = BatchConfig.parse(config["batchEvents"]) if config.get("batchEvents") else None
        except ValueError as err:
            raise ValueError(f"{where}: batchEvents: {err}") from None
        limits = []
        for c_index, limit in enumerate(fn.concurrency or []):
            try:
                limits.append(ConcurrencyLimit.parse(limit))
            except ValueError as err:
                raise ValueError(f"{where}: concurrency[{c_index}]: {err}") from None
        triggers = []
        for t_index, trig in enumerate(fn.triggers):
            if _never_emitted(trig.event):
                raise ValueError(
                    f"{where}: triggers[{t_index}]: tripkit's local executor never sends "
                    f"{trig.event!r}, so the function would never run; of Inngest's own events "
                    f"it sends {' and '.join(TRIGGERABLE_INTERNAL_EVENTS)}"
                )
            try:
                expr = Expression.compile(trig.expression) if trig.expression else None
                cron = CronSchedule.parse(trig.cron) if trig.cron is not None else None
            except ValueError as err:
                raise ValueError(f"{where}: triggers[{t_index}]: {err}") from None
            triggers.append(Trigger(trig.event, expr, cron))
        try:
            flow = FlowControl.parse(config)
            cancel = CancelOn.parse_all(config.get("cancel"))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        entries.append(
            FunctionEntry(
                id=fn.id,
                name=fn.name or fn.id,
                app=body.appname,
                url=step.runtime.url,
                triggers=triggers,
                retries=step.retries.attempts if step.retries else DEFAULT_RETRIES,
                config=config,
                registered_at=registered_at,
                concurrency=tuple(limits),
                timeouts=timeouts,
                batch=batch,
                flow=flow,
                cancel=cancel,
            )
        )
    return entries


#: The ``inngest/`` events a function may be triggered by: those this executor sends
#: (``inngest/function.finished`` it does not; invoked and cron events go to one run).
TRIGGERABLE_INTERNAL_EVENTS = (InternalEvent.FUNCTION_FAILED, InternalEvent.FUNCTION_CANCELLED)


def _never_emitted(event: str | None) -> bool:
    return (
        event is not None
        and event.startswith(RESERVED_EVENT_PREFIX)
        and not event.endswith("*")
        and event not in TRIGGERABLE_INTERNAL_EVENTS
    )
