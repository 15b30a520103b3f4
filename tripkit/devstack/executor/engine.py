"""The state and call loop of the local Inngest executor.

It keeps what the Inngest Dev Server keeps: the functions an app registered, recent
events (deduplicated by id for 24 h) and one run per (event, matching function). Each
run is an asyncio task that drives the app's real SDK over HTTP exactly as the server
does: discovery calls, planned and parallel steps, memoized step output, retries with
backoff, sleeps, and an ``inngest/function.failed`` event when a run fails for good.
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
answer means), records.py (events, runs, steps), concurrency.py (the slot queues).
"""

from __future__ import annotations

import asyncio
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
from tripkit.devstack.executor.calls import Caller, Reply, parse_when
from tripkit.devstack.executor.concurrency import SlotQueue
from tripkit.devstack.executor.config import DEDUP_WINDOW, MAX_DEDUP_IDS, ExecutorConfig
from tripkit.devstack.executor.durations import parse_duration
from tripkit.devstack.executor.expressions import EVENT_AND_ASYNC, Expression
from tripkit.devstack.executor.flow import FlowState
from tripkit.devstack.executor.protocol import (
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
from tripkit.devstack.executor.waits import Listeners, Pause

log = logging.getLogger("tripkit.devstack.executor")


class RunFailed(Exception):
    """The run cannot go on: its error is final."""

    def __init__(self, error: dict[str, Json]) -> None:
        super().__init__(error.get("message"))
        self.error = error


class RunCancelled(Exception):
    """The run was cancelled while a call to the app was in flight: stop at this boundary."""


#: The error Inngest puts in ``inngest/function.cancelled``.
CANCELLED_ERROR = {"error": "function cancelled", "name": "Error", "message": "function cancelled"}


class BadInput(ValueError):
    """A request body we refuse; the message is safe to return to the caller."""


class Engine:
    """Functions, events and runs of one executor process."""

    def __init__(self, config: ExecutorConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.caller = Caller(config, client)
        self.functions: dict[str, FunctionEntry] = {}
        self.events: OrderedDict[str, EventRecord] = OrderedDict()
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self.syncs: OrderedDict[str, dict[str, Json]] = OrderedDict()
        self.queues: dict[str, SlotQueue] = {}
        self._dedup: OrderedDict[str, tuple[str, datetime]] = OrderedDict()
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
            if name.startswith(RESERVED_EVENT_PREFIX):
                raise BadInput(
                    f"{where}.name: names starting with '{RESERVED_EVENT_PREFIX}' are reserved"
                )
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
        self._start(fn, event)

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
        def on_match(_event: dict[str, Json]) -> None:
            self.cancel(run_id)

        return on_match

    def cancel(self, run_id: str) -> RunRecord | None:
        """Cancel a run as Inngest does: it is Cancelled now and stops at its next step
        boundary (a call to the app in flight finishes and its result is dropped); then
        ``inngest/function.cancelled`` is emitted."""
        run = self.runs.get(run_id)
        if run is None:
            return None
        if run.finished:
            return run
        self._finish(run, RunStatus.CANCELLED)
        if run.task is not None and run.calls_in_flight == 0:
            run.task.cancel()
        log.info("run %s cancelled", run.run_id)
        data = {
            "function_id": run.function_id,
            "run_id": run.run_id,
            "error": dict(CANCELLED_ERROR),
            "event": run.event.payload(),
            "events": [run.event.payload()],
        }
        # The run id as the event id, as Inngest does: one cancelled event per run.
        self.ingest(
            [{"name": InternalEvent.FUNCTION_CANCELLED, "data": data, "id": run.run_id, "ts": None}]
        )
        return run

    async def aclose(self) -> None:
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
        self.listeners.remove_run(run.run_id)

    async def _drive(self, run: RunRecord) -> None:
        try:
            if run.throttle_delay > 0:  # queued behind the function's throttle
                await asyncio.sleep(min(run.throttle_delay, self.config.max_sleep))
                run.throttle_delay = 0.0
            while True:
                reply = await self._settle(run, None)
                if reply.kind == "done":
                    self._finish(run, RunStatus.COMPLETED, output=reply.output)
                    log.info("run %s completed", run.run_id)
                    return
                await self._apply_all(run, reply.ops)
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
        failed = {
            "function_id": run.function_id,
            "run_id": run.run_id,
            "error": {k: error.get(k) for k in ("name", "message", "stack")},
            "event": run.event.payload(),
            "events": [run.event.payload()],
        }
        self.ingest_internal(InternalEvent.FUNCTION_FAILED, failed)

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
                if isinstance(exc, RunFailed | RunCancelled):
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
            run.calls_in_flight += 1
            try:
                reply = await self.caller.send(run, fn, target, attempt)
            finally:
                run.calls_in_flight -= 1
        finally:
            for queue in held:
                queue.release()
        if run.status == RunStatus.CANCELLED:  # while the app was answering: drop its answer
            raise RunCancelled(run.run_id)
        return reply
