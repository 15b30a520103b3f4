"""The state and call loop of the local Inngest executor (the HTTP surface is routes.py).

It keeps what the Inngest Dev Server keeps: the functions an app registered, recent
events (deduplicated by id for 24 h) and one run per (event, matching function). Each
run is an asyncio task that drives the app's real SDK over HTTP exactly as the server
does: discovery calls, planned and parallel steps, memoized step output, retries with
backoff, sleeps, and an ``inngest/function.failed`` event when a run fails for good.
A function's ``concurrency`` limits are enforced the way Inngest does: each call to the
app holds a slot of every queue the function's limits name; calls beyond a limit wait,
the oldest run first, and a run between steps (sleeping, backing off) holds none.
Everything lives in memory and is bounded; nothing here is needed in production.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import json
import logging
import math
import os
import random
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from tripkit import signing
from tripkit.devstack.executor.registry import (
    ConcurrencyLimit,
    FunctionEntry,
    Json,
    SyncBody,
    entries_from,
    iso,
    now_utc,
)
from tripkit.errors import ConfigError

log = logging.getLogger("tripkit.devstack.executor")

RunStatus = Literal["Running", "Completed", "Failed", "Cancelled"]

DEFAULT_BACKOFF: tuple[float, ...] = (15.0, 30.0, 60.0, 120.0, 300.0)
DEFAULT_UNREACHABLE_BACKOFF: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0)
FAILED_EVENT = "inngest/function.failed"
DEDUP_WINDOW = timedelta(hours=24)
MAX_EVENT_BYTES = 3 * 1024 * 1024
MAX_DEDUP_IDS = 100_000  # ids remembered for dedup; beyond that the oldest are forgotten

Backoff = Sequence[float] | Callable[[int], float]


@dataclass(frozen=True)
class ExecutorConfig:
    """Knobs of the local executor; durations are in seconds.

    ``backoff`` gives the wait after failed attempt ``n`` (0-based): a list (its last
    value repeats) or a function. ``jitter`` adds up to that fraction on top, like the
    real server. Connection-level failures (refused, reset, 502-504, an answer that is
    not from the SDK) do not use attempts: they are retried on ``unreachable_backoff``
    for up to ``unreachable_budget`` seconds, so an app that restarts is picked up.
    """

    host: str = "127.0.0.1"
    port: int = 8288
    backoff: Backoff = DEFAULT_BACKOFF
    jitter: float = 0.1
    signing_key: str | None = field(default=None, repr=False)
    signing_key_fallback: str | None = field(default=None, repr=False)
    event_key: str | None = field(default=None, repr=False)
    request_timeout: float = 300.0
    unreachable_budget: float = 60.0
    unreachable_backoff: Sequence[float] = DEFAULT_UNREACHABLE_BACKOFF
    max_sleep: float = 24 * 3600.0
    max_runs: int = 10_000
    max_events: int = 10_000
    max_calls_per_run: int = 10_000

    def __post_init__(self) -> None:
        for name in ("signing_key", "signing_key_fallback"):
            key = getattr(self, name)
            if key is None:
                continue
            try:
                signing.bearer_token(key)
            except signing.SignatureError:
                raise ConfigError(
                    f"The executor's {name} is not a signing key (signkey-<env>-<hex>)."
                ) from None
        if self.request_timeout <= 0 or self.unreachable_budget < 0 or self.max_sleep < 0:
            raise ConfigError("The executor's timeouts and budgets must be positive seconds.")
        if self.jitter < 0 or min(self.max_runs, self.max_events, self.max_calls_per_run) < 1:
            raise ConfigError("The executor's jitter and limits must be positive.")
        if not callable(self.backoff) and not list(self.backoff):
            raise ConfigError("The executor's backoff schedule is empty.")
        if not list(self.unreachable_backoff):
            raise ConfigError("The executor's unreachable_backoff schedule is empty.")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def server_kind(self) -> str:
        """What we tell the SDK we are: it rejects a sync from the wrong kind."""
        return "cloud" if self.signing_key else "dev"

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        if callable(self.backoff):
            base = float(self.backoff(attempt))
        else:
            schedule = list(self.backoff)
            base = float(schedule[min(attempt, len(schedule) - 1)])
        return base * (1.0 + random.uniform(0.0, self.jitter)) if self.jitter > 0 else base

    def unreachable_delay(self, n: int) -> float:
        schedule = list(self.unreachable_backoff)
        return float(schedule[min(n, len(schedule) - 1)])


# ---------------------------------------------------------------------------- helpers

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid() -> str:
    """A ULID like the ones Inngest uses for run and event ids (sortable by time)."""
    n = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def parse_when(value: str, now: datetime) -> float | None:
    """Seconds from ``now`` to ``value``: delta seconds, an HTTP date or ISO-8601."""
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    moment: datetime | None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def error_dict(name: str, message: str, stack: str | None = None) -> dict[str, Json]:
    return {"name": name, "message": message, "stack": stack}


def _error_from(raw: Json, fallback: str) -> dict[str, Json]:
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


def _memo_error(err: dict[str, Json]) -> dict[str, Json]:
    """What the SDK expects in ``steps`` for a failed step (it raises StepError)."""
    return {"error": {"name": err["name"], "message": err["message"], "stack": err.get("stack")}}


# ------------------------------------------------------------------------- records


@dataclass
class EventRecord:
    internal_id: str
    id: str
    name: str
    data: dict[str, Json]
    ts: int
    received_at: datetime
    run_ids: list[str] = field(default_factory=list)

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
        }


@dataclass
class StepRecord:
    id: str
    name: str
    op: str
    status: str = "planned"  # planned | running | sleeping | completed | failed
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
    status: RunStatus = "Running"
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
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.status != "Running"

    def to_json(self) -> dict[str, Json]:
        """The dev server's run fields, plus tripkit's accounting extras."""
        return {
            "run_id": self.run_id,
            "function_id": self.function_id,
            "function_name": self.function_name,
            "app_id": self.app_id,
            "event_id": self.event.internal_id,
            "event_name": self.event.name,
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
            "queued": self.waiting_for_slot > 0,
        }


class RunFailed(Exception):
    """The run cannot go on: its error is final."""

    def __init__(self, error: dict[str, Json]) -> None:
        super().__init__(error.get("message"))
        self.error = error


@dataclass
class Reply:
    """One SDK answer, classified."""

    kind: Literal["done", "ops", "error", "unreachable"]
    output: Json = None
    ops: list[dict[str, Json]] = field(default_factory=list)
    error: dict[str, Json] | None = None
    no_retry: bool = False
    retry_after: float | None = None
    sent_at: datetime = field(default_factory=now_utc)


class BadInput(ValueError):
    """A request body we refuse; the message is safe to return to the caller."""


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


# --------------------------------------------------------------------------- engine


class Engine:
    """Functions, events and runs of one executor process."""

    def __init__(self, config: ExecutorConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        # No cap on connections: a capped httpx pool can lose a slot for good when a call
        # is cancelled (a cancelled run) at the wrong moment (encode/httpcore#1093), and
        # calls are bounded by the functions' concurrency limits, as on Inngest.
        self.client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
            follow_redirects=False,
        )
        self.functions: dict[str, FunctionEntry] = {}
        self.events: OrderedDict[str, EventRecord] = OrderedDict()
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self.syncs: OrderedDict[str, dict[str, Json]] = OrderedDict()
        self.queues: dict[str, SlotQueue] = {}
        self._dedup: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    # -- registration

    def check_register_auth(self, authorization: str | None) -> bool:
        """With a signing key, the SDK must prove it holds the same key (Bearer hash)."""
        if not self.config.signing_key:
            return True
        for key in (self.config.signing_key, self.config.signing_key_fallback):
            if key and authorization == f"Bearer {signing.bearer_token(key)}":
                return True
        return False

    def register(self, raw: Json, sync_id: str | None = None) -> dict[str, Json]:
        """Store an app's functions, replacing its previous set; BadInput if invalid."""
        if not isinstance(raw, dict):
            raise BadInput("the body must be a JSON object")
        try:
            body = SyncBody.model_validate(raw)
            entries = entries_from(body, raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadInput(f"{where}: {first['msg']}") from None
        except ValueError as err:
            raise BadInput(str(err)) from None
        previous = {k: v for k, v in self.functions.items() if v.app == body.appname}
        modified = {k: v.config for k, v in previous.items()} != {e.id: e.config for e in entries}
        for key in previous:
            del self.functions[key]
        for entry in entries:
            self.functions[entry.id] = entry
        log.info("registered app %s: %s", body.appname, ", ".join(e.id for e in entries))
        if sync_id:
            self.syncs[sync_id] = {
                "app_id": body.appname,
                "url": body.url,
                "functions": [e.id for e in entries],
                "modified": modified,
            }
            while len(self.syncs) > 100:
                self.syncs.popitem(last=False)
        return {"ok": True, "modified": modified}

    # -- events

    def parse_events(self, raw: Json) -> list[dict[str, Json]]:
        """Validate an event body (one event or a list); BadInput with the first problem."""
        items = raw if isinstance(raw, list) else [raw]
        parsed: list[dict[str, Json]] = []
        for index, item in enumerate(items):
            where = f"events[{index}]" if isinstance(raw, list) else "event"
            if not isinstance(item, dict):
                raise BadInput(f"{where}: an event is a JSON object")
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                raise BadInput(f"{where}.name: required, a non-empty string")
            if name.startswith("inngest/"):
                raise BadInput(f"{where}.name: names starting with 'inngest/' are reserved")
            data = item.get("data")
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise BadInput(f"{where}.data: must be a JSON object")
            event_id = item.get("id")
            if event_id is not None and (not isinstance(event_id, str) or not event_id):
                raise BadInput(f"{where}.id: must be a non-empty string")
            ts = item.get("ts")
            if ts is not None and (
                isinstance(ts, bool)
                or not isinstance(ts, int | float)
                or not math.isfinite(ts)
                or not 0 <= ts < 2**53
            ):
                raise BadInput(f"{where}.ts: must be a number of milliseconds")
            parsed.append({"name": name, "data": data, "id": event_id, "ts": ts})
        return parsed

    def ingest(self, events: list[dict[str, Json]]) -> list[str]:
        """Record events and start their runs; a repeated id within 24 h starts nothing."""
        ids: list[str] = []
        received = now_utc()
        self._prune_dedup(received)
        for item in events:
            user_id = item.get("id")
            if user_id and user_id in self._dedup:
                ids.append(self._dedup[user_id][0])
                log.info("event %s is a duplicate (same id within 24 h): no new run", user_id)
                continue
            internal_id = new_ulid()
            ts = item.get("ts")
            record = EventRecord(
                internal_id=internal_id,
                id=user_id or internal_id,
                name=item["name"],
                data=item["data"],
                ts=int(ts) if ts is not None else int(received.timestamp() * 1000),
                received_at=received,
            )
            if user_id:
                self._dedup[user_id] = (internal_id, received)
                self._trim(self._dedup, MAX_DEDUP_IDS)
            self.events[internal_id] = record
            self._trim(self.events, self.config.max_events)
            ids.append(internal_id)
            for fn in list(self.functions.values()):
                payload = record.payload()
                if any(t.matches(record.name, payload) for t in fn.triggers):
                    self._start(fn, record)
        return ids

    def _prune_dedup(self, now: datetime) -> None:
        while self._dedup:
            oldest = next(iter(self._dedup.values()))
            if now - oldest[1] < DEDUP_WINDOW:
                break
            self._dedup.popitem(last=False)

    @staticmethod
    def _trim(table: OrderedDict[str, Any], limit: int) -> None:
        while len(table) > limit:
            table.popitem(last=False)

    def find_event(self, event_id: str) -> EventRecord | None:
        """By internal id, or by the id the sender chose (tripkit's session id)."""
        if event_id in self.events:
            return self.events[event_id]
        hit = self._dedup.get(event_id)
        if hit is not None:
            return self.events.get(hit[0])
        for record in reversed(self.events.values()):
            if record.id == event_id:
                return record
        return None

    # -- runs

    def _start(self, fn: FunctionEntry, event: EventRecord) -> RunRecord:
        run = RunRecord(
            run_id=new_ulid(),
            function_id=fn.id,
            function_name=fn.name,
            app_id=fn.app,
            event=event,
            started_at=now_utc(),
        )
        self.runs[run.run_id] = run
        event.run_ids.append(run.run_id)
        self._evict_runs()
        run.task = asyncio.get_running_loop().create_task(
            self._drive(run), name=f"run {run.run_id} {fn.id}"
        )
        log.info("run %s started: %s for event %s", run.run_id, fn.id, event.name)
        return run

    def _evict_runs(self) -> None:
        excess = len(self.runs) - self.config.max_runs
        if excess <= 0:
            return
        for run_id in [r.run_id for r in self.runs.values() if r.finished][:excess]:
            del self.runs[run_id]

    def cancel(self, run_id: str) -> RunRecord | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        if not run.finished and run.task is not None:
            run.task.cancel()
            self._finish(run, "Cancelled")
        return run

    async def aclose(self) -> None:
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        for run in self.runs.values():
            if not run.finished and run.task is not None:
                run.task.cancel()
                self._finish(run, "Cancelled")
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    def _finish(
        self,
        run: RunRecord,
        status: RunStatus,
        output: Json = None,
        error: dict[str, Json] | None = None,
    ) -> None:
        if run.finished:
            return
        run.status = status
        run.ended_at = now_utc()
        run.output = output if error is None else error
        run.error = error

    async def _drive(self, run: RunRecord) -> None:
        try:
            while True:
                reply = await self._settle(run, None)
                if reply.kind == "done":
                    self._finish(run, "Completed", output=reply.output)
                    log.info("run %s completed", run.run_id)
                    return
                await self._apply_all(run, reply.ops)
        except RunFailed as failed:
            self._fail(run, failed.error)
        except asyncio.CancelledError:
            self._finish(run, "Cancelled")
            raise
        except Exception as err:  # a bug here must not leave a run Running forever
            log.exception("run %s: executor error", run.run_id)
            self._fail(run, error_dict("ExecutorError", f"{type(err).__name__}: {err}"))

    def _fail(self, run: RunRecord, error: dict[str, Json]) -> None:
        if run.finished:
            return
        self._finish(run, "Failed", error=error)
        log.warning("run %s failed: %s: %s", run.run_id, error.get("name"), error.get("message"))
        failed = {
            "function_id": run.function_id,
            "run_id": run.run_id,
            "error": {k: error.get(k) for k in ("name", "message", "stack")},
            "event": run.event.payload(),
            "events": [run.event.payload()],
        }
        self.ingest_internal(FAILED_EVENT, failed)

    def ingest_internal(self, name: str, data: dict[str, Json]) -> str:
        """Internal events (``inngest/...``) skip the public validation."""
        return self.ingest([{"name": name, "data": data, "id": None, "ts": None}])[0]

    async def _apply_all(self, run: RunRecord, ops: list[dict[str, Json]]) -> None:
        if len(ops) == 1:
            await self._apply(run, ops[0])
            return
        # Several ops at once are parallel steps: run them concurrently, rediscover after all.
        try:
            async with asyncio.TaskGroup() as group:
                for op in ops:
                    group.create_task(self._apply(run, op))
        except ExceptionGroup as eg:
            for exc in eg.exceptions:
                if isinstance(exc, RunFailed):
                    raise exc from None
            raise

    def _step(self, run: RunRecord, op: dict[str, Json], at: datetime) -> StepRecord:
        step_id = str(op["id"])
        record = run.steps.get(step_id)
        if record is None:
            name = op.get("displayName") or op.get("name") or step_id
            record = StepRecord(id=step_id, name=str(name), op=str(op["op"]), started_at=at)
            run.steps[step_id] = record
        return record

    async def _store(self, run: RunRecord, step_id: str, value: Json) -> None:
        async with run.lock:
            if step_id not in run.memo:
                run.stack.append(step_id)
            run.memo[step_id] = value

    async def _apply(self, run: RunRecord, op: dict[str, Json]) -> None:
        kind, step_id = op["op"], str(op["id"])
        step = self._step(run, op, now_utc())
        if kind == "StepRun":
            await self._store(run, step_id, {"data": op.get("data")})
            step.status, step.ended_at = "completed", now_utc()
        elif kind in ("StepFailed", "StepError"):
            err = _error_from(op.get("error"), "step failed")
            await self._store(run, step_id, _memo_error(err))
            step.status, step.ended_at, step.error = "failed", now_utc(), err
        elif kind == "Sleep":
            delay = parse_when(str(op.get("name") or ""), now_utc())
            if delay is None:
                raise RunFailed(error_dict("ProtocolError", f"Sleep op without a wake time: {op}"))
            step.status = "sleeping"
            await asyncio.sleep(min(delay, self.config.max_sleep))
            await self._store(run, step_id, None)
            step.status, step.ended_at = "completed", now_utc()
        elif kind == "StepPlanned":
            step.status = "running"
            reply = await self._settle(run, step_id)
            if reply.kind != "ops":
                raise RunFailed(
                    error_dict(
                        "ProtocolError",
                        f"the SDK finished the function while executing planned step {step_id}",
                    )
                )
            for sub in reply.ops:
                if sub["op"] == "StepPlanned" and sub["id"] == step_id:
                    raise RunFailed(
                        error_dict("ProtocolError", f"step {step_id} was planned again")
                    )
                await self._apply(run, sub)
        else:
            raise RunFailed(
                error_dict(
                    "UnsupportedOpcode",
                    f"the SDK asked for {kind!r} (step {step.name!r}); tripkit's local executor "
                    "supports StepRun, StepPlanned, StepError, StepFailed and Sleep",
                )
            )

    def _function(self, run: RunRecord) -> FunctionEntry:
        fn = self.functions.get(run.function_id)
        if fn is None:
            raise RunFailed(
                error_dict(
                    "FunctionNotFound",
                    f"{run.function_id} is no longer registered (the app synced without it)",
                )
            )
        return fn

    async def _settle(self, run: RunRecord, target: str | None) -> Reply:
        """Call until an answer moves the run on; retry errors with backoff meanwhile."""
        attempt = 0
        down_since: float | None = None
        down_count = 0
        while True:
            fn = self._function(run)
            if run.sdk_calls >= self.config.max_calls_per_run:
                raise RunFailed(
                    error_dict(
                        "TooManyCalls",
                        f"the run made {run.sdk_calls} calls to the app without finishing",
                    )
                )
            reply = await self._call(run, fn, target, attempt)
            if reply.kind == "unreachable":
                assert reply.error is not None
                clock = time.monotonic()
                down_since = clock if down_since is None else down_since
                if clock - down_since >= self.config.unreachable_budget:
                    raise RunFailed(
                        error_dict(
                            "AppUnreachable",
                            f"the app did not answer for {self.config.unreachable_budget:g} s: "
                            f"{reply.error['message']}",
                        )
                    )
                run.unreachable_retries += 1
                await asyncio.sleep(self.config.unreachable_delay(down_count))
                down_count += 1
                continue
            down_since, down_count = None, 0
            if reply.kind == "done":
                return reply
            if reply.kind == "error":
                assert reply.error is not None
                run.function_errors += 1
                if reply.no_retry or attempt + 1 >= fn.max_attempts:
                    raise RunFailed(reply.error)
                await self._backoff(attempt, reply.retry_after)
                attempt += 1
                continue
            for op in reply.ops:
                if op["op"] in ("StepRun", "StepError", "StepFailed"):
                    self._step(run, op, reply.sent_at).attempts += 1
            errored = [op for op in reply.ops if op["op"] == "StepError"]
            if errored and not reply.no_retry and attempt + 1 < fn.max_attempts:
                for op in errored:
                    self._step(run, op, reply.sent_at).error = _error_from(
                        op.get("error"), "step error"
                    )
                await self._backoff(attempt, reply.retry_after)
                attempt += 1
                continue
            return reply

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        delay = self.config.retry_delay(attempt) if retry_after is None else retry_after
        await asyncio.sleep(min(delay, self.config.max_sleep))

    def request_body(self, run: RunRecord, fn: FunctionEntry, attempt: int) -> dict[str, Json]:
        """The body the SDK validates strictly (see the protocol notes)."""
        event = run.event.payload()
        return {
            "event": event,
            "events": [event],
            "steps": dict(run.memo),
            "use_api": False,
            "ctx": {
                "run_id": run.run_id,
                "attempt": attempt,
                "max_attempts": fn.max_attempts,
                "disable_immediate_execution": False,
                "use_api": False,
                "stack": {"stack": list(run.stack), "current": len(run.stack)},
            },
        }

    @staticmethod
    def call_url(fn: FunctionEntry, target: str | None) -> str:
        parts = urllib.parse.urlsplit(fn.url)
        query = [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("fnId", "stepId")
        ]
        query += [("fnId", fn.id), ("stepId", target or "step")]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def signed_headers(self, body: bytes) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "user-agent": "tripkit-devstack-executor",
            "x-inngest-server-kind": self.config.server_kind,
            "x-request-id": uuid.uuid4().hex,
        }
        if self.config.signing_key:
            headers["x-inngest-signature"] = signing.sign(body, self.config.signing_key)
        return headers

    def queues_of(self, fn: FunctionEntry, run: RunRecord) -> list[SlotQueue]:
        """The concurrency queues one call of ``run`` must hold a slot of, in name order
        (a fixed order, so two runs never wait for each other's slots)."""
        named: dict[str, ConcurrencyLimit] = {}
        for limit in fn.concurrency:
            named[limit.queue(fn.id, run.event.payload())] = limit
        out = []
        for name in sorted(named):
            size = named[name].limit
            queue = self.queues.get(name)
            if queue is None:
                queue = self.queues[name] = SlotQueue(size)
            elif queue.limit != size:  # the app synced a new limit
                queue.limit = size
                queue.wake()
            out.append(queue)
        return out

    async def _call(
        self, run: RunRecord, fn: FunctionEntry, target: str | None, attempt: int
    ) -> Reply:
        queues = self.queues_of(fn, run)
        held: list[SlotQueue] = []
        try:
            run.waiting_for_slot += 1
            try:
                for queue in queues:
                    await queue.acquire(run.started_at.timestamp())
                    held.append(queue)
            finally:
                run.waiting_for_slot -= 1
            return await self._send(run, fn, target, attempt)
        finally:
            for queue in held:
                queue.release()

    async def _send(
        self, run: RunRecord, fn: FunctionEntry, target: str | None, attempt: int
    ) -> Reply:
        async with run.lock:
            body = json.dumps(self.request_body(run, fn, attempt)).encode()
        sent_at = now_utc()
        run.sdk_calls += 1
        url = self.call_url(fn, target)
        try:
            resp = await self.client.post(
                url,
                content=body,
                headers=self.signed_headers(body),
                timeout=self.config.request_timeout,
            )
        except httpx.ConnectTimeout as err:
            return _down(f"connecting to {fn.url} timed out ({err!r})", sent_at)
        except httpx.TimeoutException:
            return Reply(
                "error",
                error=error_dict(
                    "RequestTimeout",
                    f"the app did not answer within {self.config.request_timeout:g} s",
                ),
                sent_at=sent_at,
            )
        except httpx.TransportError as err:
            return _down(f"{type(err).__name__} calling {fn.url}: {err}", sent_at)
        return self._classify(resp, sent_at)

    def _classify(self, resp: httpx.Response, sent_at: datetime) -> Reply:
        status, headers, content = resp.status_code, resp.headers, resp.content
        if status in (502, 503, 504):
            return _down(f"HTTP {status} from the app's address", sent_at)
        if "x-inngest-sdk" not in headers:
            if status in (401, 403) and headers.get("x-inngest-sdk-handled") == "true":
                hint = (
                    "the executor's signing key differs from the app's INNGEST_SIGNING_KEY"
                    if self.config.signing_key
                    else "the app runs in production mode: give the executor its signing key, "
                    "or set INNGEST_DEV=1 for the app"
                )
                return Reply(
                    "error",
                    error=error_dict(
                        "SignatureRejected", f"the app refused the call ({status}): {hint}"
                    ),
                    sent_at=sent_at,
                )
            return _down(
                f"HTTP {status} without an x-inngest-sdk header: not the Inngest SDK "
                "(wrong URL or serve path, or the app is restarting)",
                sent_at,
            )
        if self.config.signing_key:
            signed = b"null" if status == 201 else content  # streaming: the SDK signs no body
            try:
                signing.verify(
                    headers.get("x-inngest-signature"),
                    signed,
                    self.config.signing_key,
                    fallback=self.config.signing_key_fallback,
                    canonicalize=False,
                )
            except signing.SignatureError as err:
                return Reply(
                    "error",
                    error=error_dict("SignatureInvalid", f"the app's answer: {err.message}"),
                    sent_at=sent_at,
                )
        if status == 201:  # INNGEST_STREAMING=force: keepalive spaces, then the real answer
            try:
                wrapped = json.loads(content.strip() or b"null")
                status = int(wrapped["status"])
                inner_headers = {str(k).lower(): str(v) for k, v in wrapped["headers"].items()}
                content = str(wrapped["body"]).encode()
            except (ValueError, KeyError, TypeError, AttributeError):
                return _protocol("a streamed answer that is not {body, headers, status}", sent_at)
            return self._interpret(status, inner_headers, content, sent_at)
        return self._interpret(status, dict(headers), content, sent_at)

    def _interpret(
        self, status: int, headers: dict[str, str], content: bytes, sent_at: datetime
    ) -> Reply:
        try:
            body: Json = json.loads(content) if content.strip() else None
        except ValueError:
            return _protocol(f"HTTP {status} with a body that is not JSON", sent_at)
        no_retry = headers.get("x-inngest-no-retry", "").lower() == "true"
        retry_after_raw = headers.get("retry-after")
        retry_after = parse_when(retry_after_raw, now_utc()) if retry_after_raw else None
        if status == 200:
            return Reply("done", output=body, sent_at=sent_at)
        if status == 206:
            if not isinstance(body, list) or not body:
                return _protocol("HTTP 206 whose body is not a non-empty list of ops", sent_at)
            for op in body:
                if not isinstance(op, dict) or not isinstance(op.get("id"), str):
                    return _protocol(f"an op without an id: {op!r}"[:500], sent_at)
                if not isinstance(op.get("op"), str):
                    return _protocol(f"an op without an opcode: {op!r}"[:500], sent_at)
            return Reply(
                "ops", ops=body, no_retry=no_retry, retry_after=retry_after, sent_at=sent_at
            )
        fallback = f"the function failed (HTTP {status})"
        return Reply(
            "error",
            error=_error_from(body, fallback),
            no_retry=no_retry,
            retry_after=retry_after,
            sent_at=sent_at,
        )


def _down(message: str, sent_at: datetime) -> Reply:
    return Reply("unreachable", error=error_dict("AppUnreachable", message), sent_at=sent_at)


def _protocol(message: str, sent_at: datetime) -> Reply:
    return Reply("error", error=error_dict("ProtocolError", message), sent_at=sent_at)
