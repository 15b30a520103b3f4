"""The state and call loop of the local Inngest executor.

It keeps what the Inngest Dev Server keeps: the functions an app registered, recent
events (deduplicated by id for 24 h) and one run per (event, matching function). Each
run is an asyncio task that drives the app's real SDK over HTTP exactly as the server
does: discovery calls, planned and parallel steps (in the SDK's "race" mode the app is
asked for the next step as each parallel step ends), memoized step output, retries with
backoff, sleeps, ``step.invoke``, and the ``inngest/function.failed`` and
``inngest/function.cancelled`` events. Cron triggers, ``batch_events`` and ``timeouts``
start and stop runs as Inngest does (schedule.py, batching.py, timeouts.py); every
cancellation goes through :meth:`Engine.cancel_run`.
A function's ``concurrency`` limits are enforced the way Inngest does: each call to the
app holds a slot of every queue the function's limits name; calls beyond a limit wait,
the oldest run first, and a run between steps (sleeping, backing off) holds none.
Debounce, idempotency and rate limits decide whether an event starts a run, a throttle
when it starts (flow.py). ``cancelOn`` and ``step.wait_for_event`` are pauses that
every incoming event is offered to (waits.py). A cancelled run stops at its next step
boundary: a step already executing in the app finishes, its result is dropped, and
``inngest/function.cancelled`` is emitted.
Everything lives in memory and is bounded; nothing here is needed in production.

Beside it: routes.py (the HTTP surface), calls.py (one call to the app and what its
answer means), records.py (events, runs, steps), concurrency.py (the slot queues),
event_ids.py (the send's id seed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from pydantic import ValidationError

from tripkit import signing
from tripkit.devstack.executor.batching import Batcher
from tripkit.devstack.executor.calls import Caller, Reply, parse_when
from tripkit.devstack.executor.concurrency import SlotQueue
from tripkit.devstack.executor.config import DEDUP_WINDOW, MAX_DEDUP_IDS, ExecutorConfig
from tripkit.devstack.executor.durations import parse_duration
from tripkit.devstack.executor.event_ids import seeded_event_id
from tripkit.devstack.executor.expressions import EVENT_AND_ASYNC, Expression
from tripkit.devstack.executor.flow import FlowState
from tripkit.devstack.executor.protocol import (
    PARALLEL_MODE_OPT,
    PARALLEL_MODE_RACE,
    RESERVED_EVENT_PREFIX,
    SUPPORTED_OPCODES,
    InternalEvent,
    Opcode,
    RunStatus,
)
from tripkit.devstack.executor.records import (
    EventRecord,
    RunRecord,
    StepRecord,
    StepStatus,
    error_dict,
    error_from,
    memo_error,
    new_ulid,
)
from tripkit.devstack.executor.registry import (
    ConcurrencyLimit,
    FunctionEntry,
    Json,
    SyncBody,
    entries_from,
    now_utc,
)
from tripkit.devstack.executor.schedule import Clock, CronSchedule, CronScheduler, utc_now
from tripkit.devstack.executor.waits import Listeners, Pause

log = logging.getLogger("tripkit.devstack.executor")


class RunFailed(Exception):
    """The run cannot go on: its error is final."""

    def __init__(self, error: dict[str, Json]) -> None:
        super().__init__(error.get("message"))
        self.error = error


class RunCancelled(Exception):
    """The run was cancelled while a call was in flight: stop at this step boundary."""


class BadInput(ValueError):
    """A request body we refuse; the message is safe to return to the caller."""


#: ``data.error`` of ``inngest/function.cancelled``, as Inngest sends it.
CANCELLED_ERROR: dict[str, Json] = {
    "error": "function cancelled",
    "message": "function cancelled",
    "name": "Error",
}
INNGEST_DATA_KEY = "_inngest"  # the server's metadata inside an event's data
INVOKE_TIMEOUT_ERROR = error_dict(
    "InngestInvokeTimeoutError", "Timed out waiting for invoked function to complete"
)


class Engine:
    """Functions, events and runs of one executor process."""

    def __init__(
        self,
        config: ExecutorConfig,
        client: httpx.AsyncClient | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.caller = Caller(config, client)
        self.functions: dict[str, FunctionEntry] = {}
        self.events: OrderedDict[str, EventRecord] = OrderedDict()
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self.syncs: OrderedDict[str, dict[str, Json]] = OrderedDict()
        self.queues: dict[str, SlotQueue] = {}
        self._dedup: OrderedDict[str, tuple[str, datetime]] = OrderedDict()
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}
        self.batcher: Batcher[EventRecord] = Batcher(self._start_batch)
        self.cron = CronScheduler(self._fire_cron, clock, config.cron_poll)
        self.flow = FlowState()
        self.listeners = Listeners()

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
        self.cron.sync(
            [
                (fn.id, t.cron)
                for fn in self.functions.values()
                for t in fn.triggers
                if t.cron is not None
            ]
        )
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

    def parse_events(self, raw: Json) -> tuple[list[dict[str, Json]], str | None]:
        """The valid events before the first bad one, and that one's problem (or None).

        As Inngest's event API does, events are taken in order and the first bad one
        stops the send: those before it are kept (their ids are returned with a 400),
        the bad one and those after it are not.
        """
        items = raw if isinstance(raw, list) else [raw]
        parsed: list[dict[str, Json]] = []
        for index, item in enumerate(items):
            where = f"events[{index}]" if isinstance(raw, list) else "event"
            try:
                parsed.append(self._parse_event(item, where))
            except BadInput as err:
                return parsed, str(err)
        return parsed, None

    @staticmethod
    def _parse_event(item: Json, where: str) -> dict[str, Json]:
        if not isinstance(item, dict):
            raise BadInput(f"{where}: an event is a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadInput(f"{where}.name: required, a non-empty string")
        if name.startswith(RESERVED_EVENT_PREFIX):
            raise BadInput(
                f"{where}.name: names starting with '{RESERVED_EVENT_PREFIX}' are reserved"
            )
        data = item.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BadInput(f"{where}.data: must be a JSON object")
        # As Inngest does: a sent event never carries the server's own metadata (a
        # forwarded invocation event could otherwise look like one).
        data = {k: v for k, v in data.items() if k != INNGEST_DATA_KEY}
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
        return {"name": name, "data": data, "id": event_id, "ts": ts}

    def ingest(self, events: list[dict[str, Json]], seed: str | None = None) -> list[str]:
        """Record events and start their runs; a repeated id within 24 h starts nothing.

        With the send's ``x-inngest-event-id-seed``, each event's internal id (and its id,
        when the sender gave none) is derived from the seed and its index, so a send the
        SDK retries gets the same ids and starts no second run.
        """
        ids: list[str] = []
        received = now_utc()
        self._prune_dedup(received)
        for index, item in enumerate(events, start=1):
            internal_id = seeded_event_id(seed, index) if seed else None
            internal_id = internal_id or new_ulid()
            event_id = item.get("id") or internal_id
            if event_id in self._dedup:
                ids.append(self._dedup[event_id][0])
                log.info("event %s is a duplicate (same id within 24 h): no new run", event_id)
                continue
            ts = item.get("ts")
            record = EventRecord(
                internal_id=internal_id,
                id=event_id,
                name=item["name"],
                data=item["data"],
                ts=int(ts) if ts is not None else int(received.timestamp() * 1000),
                received_at=received,
            )
            self._dedup[event_id] = (internal_id, received)
            self._trim(self._dedup, MAX_DEDUP_IDS)
            self._remember(record)
            ids.append(internal_id)
            self.listeners.deliver(record.name, record.payload())  # waits and cancelOn first
            for fn in list(self.functions.values()):
                payload = record.payload()
                if any(t.matches(record.name, payload) for t in fn.triggers):
                    self._trigger(fn, record)
        return ids

    def _trigger(self, fn: FunctionEntry, event: EventRecord) -> None:
        """Start ``fn`` for ``event`` unless its flow control holds or skips the event."""
        rule = fn.flow.debounce
        if rule is None:
            self._admit(fn.id, event)
            return
        superseded = self.flow.debounce(
            fn.id, rule, event, event.payload(), lambda last: self._admit(fn.id, last)
        )
        if superseded is not None:
            superseded.skipped[fn.id] = f"debounced: event {event.internal_id} came later"
        event.skipped[fn.id] = "debounced: waiting for a quiet period"

    def _admit(self, function_id: str, event: EventRecord) -> None:
        fn = self.functions.get(function_id)
        if fn is None:  # the app synced without it while its event was held
            event.skipped[function_id] = "the function is no longer registered"
            return
        event.skipped.pop(function_id, None)
        reason = self.flow.skip_reason(fn.id, fn.flow, event.payload())
        if reason:
            event.skipped[fn.id] = reason
            log.info("event %s starts no run of %s: %s", event.internal_id, fn.id, reason)
            return
        if fn.batch is None or not self.batcher.add(fn.id, fn.batch, event, event.payload()):
            self._start(fn, event)

    def _remember(self, record: EventRecord) -> None:
        self.events[record.internal_id] = record
        self._trim(self.events, self.config.max_events)

    def _start_batch(self, function_id: str, batch: list[EventRecord]) -> None:
        fn = self.functions.get(function_id)
        if fn is None:
            log.warning("%d batched events for %s dropped: unregistered", len(batch), function_id)
            return
        self._start(fn, batch[0], batch=batch)

    def _fire_cron(self, function_id: str, schedule: CronSchedule, due: datetime) -> None:
        """A cron trigger is due: one run, its event ``inngest/scheduled.timer``."""
        fn = self.functions.get(function_id)
        if fn is None:
            return
        now = now_utc()
        record = EventRecord(
            internal_id=new_ulid(),
            id=due.strftime("%Y-%m-%dT%H:%M:%SZ"),  # Inngest's id: the scheduled time
            name=InternalEvent.SCHEDULED_TIMER,
            data={"cron": schedule.expression},
            ts=int(now.timestamp() * 1000),
            received_at=now,
        )
        self._remember(record)
        self._start(fn, record)

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

    def _start(
        self, fn: FunctionEntry, event: EventRecord, batch: list[EventRecord] | None = None
    ) -> RunRecord:
        run = RunRecord(
            run_id=new_ulid(),
            function_id=fn.id,
            function_name=fn.name,
            app_id=fn.app,
            event=event,
            started_at=now_utc(),
            batch=list(batch or []),
        )
        self.runs[run.run_id] = run
        for record in run.events:
            record.run_ids.append(run.run_id)
        self._evict_runs()
        if fn.timeouts is not None and fn.timeouts.start is not None:
            self._arm(run, fn.timeouts.start, self._start_timed_out, fn.timeouts.start)
        if fn.flow.throttle is not None:
            run.throttle_delay = self.flow.throttle_delay(fn.id, fn.flow.throttle, event.payload())
        for rule in fn.cancel:
            self.listeners.add(
                Pause(
                    run.run_id,
                    rule.event,
                    rule.condition,
                    event.payload(),
                    on_match=self._canceller(run.run_id),
                    expires=None if rule.timeout is None else self.listeners.clock() + rule.timeout,
                )
            )
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

    def _canceller(self, run_id: str) -> Callable[[dict[str, Json]], None]:
        def on_match(event: dict[str, Json]) -> None:
            run = self.runs.get(run_id)
            if run is not None:
                self.cancel_run(run, f"cancelOn: event {event.get('name')} {event.get('id')}")

        return on_match

    def cancel(self, run_id: str) -> RunRecord | None:
        """``DELETE /v1/runs/{id}``: see :meth:`cancel_run`."""
        run = self.runs.get(run_id)
        if run is None:
            return None
        self.cancel_run(run, "cancelled through the REST API")
        return run

    def cancel_run(self, run: RunRecord, reason: str) -> None:
        """Cancel ``run`` as Inngest does, whatever asked (the API, a timeout, cancel_on).

        A queued, sleeping or backing-off run stops at once; a call to the app already
        in flight completes (a step is atomic) and nothing runs after it. Emits
        ``inngest/function.cancelled``.
        """
        if run.finished:
            return
        run.cancel_reason = reason
        self._finish(run, RunStatus.CANCELLED)
        log.info("run %s cancelled: %s", run.run_id, reason)
        if run.calls_in_flight == 0 and run.task is not None and not run.task.done():
            run.task.cancel()
        self._emit_finished(InternalEvent.FUNCTION_CANCELLED, run, dict(CANCELLED_ERROR))

    def _arm(self, run: RunRecord, delay: float, callback: Any, *args: Any) -> None:
        handle = asyncio.get_running_loop().call_later(delay, callback, run, *args)
        self._timers.setdefault(run.run_id, []).append(handle)

    def _start_timed_out(self, run: RunRecord, limit: float) -> None:
        if run.first_call_at is None:
            self.cancel_run(run, f"timeouts.start: not started within {limit:g} s")

    def _finish_timed_out(self, run: RunRecord, limit: float) -> None:
        self.cancel_run(run, f"timeouts.finish: not finished within {limit:g} s of starting")

    async def aclose(self) -> None:
        self.batcher.close()
        await self.cron.aclose()
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        for run in self.runs.values():
            if not run.finished and run.task is not None:
                run.task.cancel()
                self._finish(run, RunStatus.CANCELLED)
        await asyncio.gather(*tasks, return_exceptions=True)
        self.flow.close()
        await self.caller.aclose()

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
        run.done.set()
        for handle in self._timers.pop(run.run_id, []):
            handle.cancel()
        self.listeners.remove_run(run.run_id)

    async def _drive(self, run: RunRecord) -> None:
        try:
            if run.throttle_delay > 0:  # queued behind the function's throttle
                await asyncio.sleep(min(run.throttle_delay, self.config.max_sleep))
                run.throttle_delay = 0.0
            while True:
                reply = await self._settle(run, None)
                final = reply if reply.kind == "done" else await self._apply_all(run, reply.ops)
                if final is not None:
                    self._finish(run, RunStatus.COMPLETED, output=final.output)
                    log.info("run %s completed", run.run_id)
                    return
        except RunFailed as failed:
            self._fail(run, failed.error)
        except RunCancelled:
            log.info("run %s stopped at a step boundary", run.run_id)
        except asyncio.CancelledError:
            self._finish(run, RunStatus.CANCELLED)
            raise
        except Exception as err:  # a bug here must not leave a run Running forever
            log.exception("run %s: executor error", run.run_id)
            self._fail(run, error_dict("ExecutorError", f"{type(err).__name__}: {err}"))

    def _fail(self, run: RunRecord, error: dict[str, Json]) -> None:
        if run.finished:
            return
        self._finish(run, RunStatus.FAILED, error=error)
        log.warning("run %s failed: %s: %s", run.run_id, error.get("name"), error.get("message"))
        # Inngest's StandardError: ``error`` is what the server saw (e.g. "invalid status
        # code: 500"), ``name``/``message``/``stack`` what the SDK reported.
        shaped: dict[str, Json] = {
            "error": error.get("error") or error.get("message"),
            "name": error.get("name") or "Error",
            "message": error.get("message"),
        }
        if error.get("stack"):
            shaped["stack"] = error["stack"]
        self._emit_finished(InternalEvent.FUNCTION_FAILED, run, shaped)

    def _emit_finished(self, name: str, run: RunRecord, error: dict[str, Json]) -> None:
        """``inngest/function.failed`` / ``.cancelled``: its id is the run id, as Inngest's."""
        data = {
            "function_id": run.function_id,
            "run_id": run.run_id,
            "error": error,
            "event": run.event.payload(),
            "events": [e.payload() for e in run.events],
        }
        self.ingest([{"name": name, "data": data, "id": run.run_id, "ts": None}])

    def ingest_internal(self, name: str, data: dict[str, Json]) -> str:
        """Internal events (``inngest/...``) skip the public validation."""
        return self.ingest([{"name": name, "data": data, "id": None, "ts": None}])[0]

    async def _apply_all(self, run: RunRecord, ops: list[dict[str, Json]]) -> Reply | None:
        """Carry out one answer's ops; the final answer if the function finished meanwhile."""
        if len(ops) == 1:
            await self._apply(run, ops[0])
            return None
        if any(_races(op) for op in ops):
            return await self._race(run, ops)
        # Parallel steps in "wait" mode (the SDK's default): run them concurrently and
        # ask for what comes next once all of them ended.
        async with _first_error(), asyncio.TaskGroup() as group:
            for op in ops:
                group.create_task(self._apply(run, op))
        return None

    async def _race(self, run: RunRecord, ops: list[dict[str, Json]]) -> Reply | None:
        """Parallel steps in "race" mode: as each one ends, ask the app what comes next.

        The answer plans again the steps still running (skipped here), and whatever
        follows the finished one, which starts at once: each parallel branch moves on
        without waiting for the others.
        """
        launched: set[str] = set()
        final: list[Reply] = []

        async def branch(op: dict[str, Json]) -> None:
            await self._apply(run, op)
            if final:
                return
            reply = await self._settle(run, None)
            if reply.kind == "done":
                final.append(reply)
            else:
                launch(reply.ops)

        def launch(new_ops: list[dict[str, Json]]) -> None:
            for op in new_ops:
                step_id = str(op["id"])
                if step_id not in launched and step_id not in run.memo:
                    launched.add(step_id)
                    group.create_task(branch(op))

        async with _first_error(), asyncio.TaskGroup() as group:
            launch(ops)
        return final[0] if final else None

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
        if kind == Opcode.STEP_RUN:
            await self._store(run, step_id, {"data": op.get("data")})
            step.status, step.ended_at = StepStatus.COMPLETED, now_utc()
        elif kind in (Opcode.STEP_FAILED, Opcode.STEP_ERROR):
            err = error_from(op.get("error"), "step failed")
            await self._store(run, step_id, memo_error(err))
            step.status, step.ended_at, step.error = StepStatus.FAILED, now_utc(), err
        elif kind == Opcode.SLEEP:
            delay = parse_when(str(op.get("name") or ""), now_utc())
            if delay is None:
                raise RunFailed(error_dict("ProtocolError", f"Sleep op without a wake time: {op}"))
            step.status = StepStatus.SLEEPING
            await asyncio.sleep(min(delay, self.config.max_sleep))
            await self._store(run, step_id, None)
            step.status, step.ended_at = StepStatus.COMPLETED, now_utc()
        elif kind == Opcode.INVOKE_FUNCTION:
            await self._invoke(run, op, step)
        elif kind == Opcode.WAIT_FOR_EVENT:
            await self._store(run, step_id, await self._wait_for_event(run, op, step))
            step.status, step.ended_at = StepStatus.COMPLETED, now_utc()
        elif kind == Opcode.STEP_PLANNED:
            step.status = StepStatus.RUNNING
            reply = await self._settle(run, step_id)
            if reply.kind != "ops":
                raise RunFailed(
                    error_dict(
                        "ProtocolError",
                        f"the SDK finished the function while executing planned step {step_id}",
                    )
                )
            for sub in reply.ops:
                if sub["op"] == Opcode.STEP_PLANNED and sub["id"] == step_id:
                    raise RunFailed(
                        error_dict("ProtocolError", f"step {step_id} was planned again")
                    )
                await self._apply(run, sub)
        else:
            raise RunFailed(
                error_dict(
                    "UnsupportedOpcode",
                    f"the SDK asked for {kind!r} (step {step.name!r}); tripkit's local executor "
                    f"supports {', '.join(SUPPORTED_OPCODES[:-1])} and {SUPPORTED_OPCODES[-1]}",
                )
            )

    async def _invoke(self, run: RunRecord, op: dict[str, Json], step: StepRecord) -> None:
        """``step.invoke``: start the function by id with the given data, wait for its end.

        Its return value becomes the step's output; its failure (or the invoke's timeout)
        the step's error, which the SDK raises at the call site.
        """
        step_id = str(op["id"])
        opts = op.get("opts") if isinstance(op.get("opts"), dict) else {}
        assert isinstance(opts, dict)
        target_id = str(opts.get("function_id") or "")
        payload = opts.get("payload") if isinstance(opts.get("payload"), dict) else {}
        assert isinstance(payload, dict)
        timeout: float | None = None
        if isinstance(opts.get("timeout"), str):
            try:
                timeout = parse_duration(str(opts["timeout"]))
            except ValueError as bad:
                message = f"step.invoke timeout: {bad}"
                raise RunFailed(error_dict("ProtocolError", message)) from None
        target = self.functions.get(target_id)
        if target is None:
            missing = error_dict("Error", f"could not find function {target_id!r} to invoke")
            await self._store(run, step_id, memo_error(missing))
            step.status, step.ended_at, step.error = StepStatus.FAILED, now_utc(), missing
            return
        step.status = StepStatus.RUNNING
        now = now_utc()
        data = dict(payload.get("data") or {})
        data[INNGEST_DATA_KEY] = {  # Inngest's InngestMetadata for an invocation
            "fn_id": target_id,
            "invoke_correlation_id": f"{run.run_id}.{step_id}",
            "invoke_expires_at": int((now.timestamp() + (timeout or 365 * 86400)) * 1000),
            "invoke_display_name": step.name,
            "source_app_id": run.app_id,
            "source_fn_id": run.function_id,
        }
        internal_id = new_ulid()
        record = EventRecord(
            internal_id=internal_id,
            id=internal_id,
            name=InternalEvent.FUNCTION_INVOKED,
            data=data,
            ts=int(now.timestamp() * 1000),
            received_at=now,
        )
        self._remember(record)
        child = self._start(target, record)
        failure: dict[str, Json]
        try:
            await asyncio.wait_for(child.done.wait(), timeout)
        except TimeoutError:
            failure = dict(INVOKE_TIMEOUT_ERROR)
        else:
            if child.status == RunStatus.COMPLETED:
                await self._store(run, step_id, {"data": child.output})
                step.status, step.ended_at = StepStatus.COMPLETED, now_utc()
                return
            failure = child.error or error_dict("Error", "function cancelled")
        await self._store(run, step_id, memo_error(failure))
        step.status, step.ended_at, step.error = StepStatus.FAILED, now_utc(), failure

    async def _wait_for_event(
        self, run: RunRecord, op: dict[str, Json], step: StepRecord
    ) -> dict[str, Json] | None:
        """The first matching event received from now on, or None at the timeout."""
        opts = op.get("opts") if isinstance(op.get("opts"), dict) else {}
        assert isinstance(opts, dict)
        name = op.get("name") or opts.get("event")
        try:
            if not isinstance(name, str) or not name:
                raise ValueError(f"no event name in {op}")
            timeout = parse_duration(str(opts.get("timeout")))
            source = opts.get("if")
            condition = Expression.compile(source, EVENT_AND_ASYNC) if source else None
        except ValueError as err:
            raise RunFailed(
                error_dict("InvalidWaitForEvent", f"step {step.name!r}: {err}")
            ) from None
        arrived: asyncio.Future[dict[str, Json]] = asyncio.get_running_loop().create_future()

        def deliver(event: dict[str, Json]) -> None:
            if not arrived.done():
                arrived.set_result(event)

        pause = self.listeners.add(
            Pause(run.run_id, name, condition, run.event.payload(), on_match=deliver)
        )
        step.status = StepStatus.WAITING
        try:
            return await asyncio.wait_for(arrived, min(timeout, self.config.max_sleep))
        except TimeoutError:
            return None
        finally:
            self.listeners.remove(pause)

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
            if run.finished:
                raise RunCancelled
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
                if op["op"] in (Opcode.STEP_RUN, Opcode.STEP_ERROR, Opcode.STEP_FAILED):
                    self._step(run, op, reply.sent_at).attempts += 1
            errored = [op for op in reply.ops if op["op"] == Opcode.STEP_ERROR]
            if errored and not reply.no_retry and attempt + 1 < fn.max_attempts:
                for op in errored:
                    self._step(run, op, reply.sent_at).error = error_from(
                        op.get("error"), "step error"
                    )
                await self._backoff(attempt, reply.retry_after)
                attempt += 1
                continue
            return reply

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        delay = self.config.retry_delay(attempt) if retry_after is None else retry_after
        await asyncio.sleep(min(delay, self.config.max_sleep))

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
            if run.finished:
                raise RunCancelled
            if run.first_call_at is None:
                run.first_call_at = now_utc()
                if fn.timeouts is not None and fn.timeouts.finish is not None:
                    self._arm(run, fn.timeouts.finish, self._finish_timed_out, fn.timeouts.finish)
            run.calls_in_flight += 1
            try:
                reply = await self.caller.send(run, fn, target, attempt)
            finally:
                run.calls_in_flight -= 1
            if run.finished:  # cancelled during the call: its answer is not acted on
                raise RunCancelled
            return reply
        finally:
            for queue in held:
                queue.release()


def _races(op: dict[str, Json]) -> bool:
    opts = op.get("opts")
    return isinstance(opts, dict) and opts.get(PARALLEL_MODE_OPT) == PARALLEL_MODE_RACE


@contextlib.asynccontextmanager
async def _first_error() -> Any:
    """Parallel branches: re-raise a run's own outcome (failed, stopped) out of the group."""
    try:
        yield
    except ExceptionGroup as eg:
        for exc in eg.exceptions:
            if isinstance(exc, RunFailed | RunCancelled):
                raise exc from None
        raise
