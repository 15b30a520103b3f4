"""The Inngest function "generate-bundles" ("Generate Trip Bundles", app "special-trips").

A generation is one run with one step per bundle, ``bundle-0`` ... ``bundle-<N-1>``, so it
costs N + 1 Inngest executions (1 run + N steps). Each step is one streamed model call:
the model picks bundle *i*'s destination (none of those the earlier bundles took) and
writes its summary, then the bundle. So:

- ``bundle-0`` also marks the session running: it rebuilds the queued session from the
  start event (session id, preferences, ``createdAt``), so it writes without reading
  (a run an older tripkit queued, whose event has no ``createdAt``, reads it once);
- every step writes its summary into the session the moment the summary line is complete;
- the last step also writes the run record, then the bundles and the final status.

Inngest memoizes each step's output (:class:`~tripkit.models.BundleOutput`: the session
as the step left it, its bundle, usage and attempt), and the next step starts from the
memoized session and the earlier bundles. A crash, a retry or a redeploy therefore redoes
only the bundle in flight, and no step lasts longer than one bundle's generation (a
serverless host cuts long requests). Every write is a single check-and-set command (see
:mod:`tripkit.store`): a retried step overwrites what its earlier attempt wrote, and no
write ever replaces a final status. All side effects happen inside steps. If the run
fails for good, ``on_failure`` (its own run with one step) marks the session failed with
the cause, so polling always ends. A run that an older tripkit started (separate
``plan`` and ``finalize`` steps) and this one resumes reuses its memoized bundles, and
ends with a ``finalize`` step if they did not complete the session. The names Inngest
knows are in :mod:`tripkit.constants`.

Run controls are Inngest's own, so they work the same on Inngest Cloud: a concurrency
limit (runs waiting for a slot keep their session ``queued``), ``cancel_on`` the cancel
event of the same session (the API writes ``cancelled`` first; the run's writes are
check-and-set, so nothing lands after it), and ``timeouts.finish``, the run's deadline.
Inngest cancels a run past its deadline and emits ``inngest/function.cancelled``; the
small function :data:`~tripkit.constants.STOPPED_FUNCTION_ID` then fails its session
with the cause, so polling and push always end.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import inngest
from pydantic import BaseModel, ConfigDict, Field

from tripkit import sessions
from tripkit.constants import (
    CANCEL_EVENT_NAME,
    EVENT_NAME,
    FUNCTION_CANCELLED_EVENT,
    FUNCTION_ID,
    FUNCTION_NAME,
    FUNCTION_SLUG,
    RETRIES,
    STOPPED_FUNCTION_ID,
)
from tripkit.errors import SessionNotFound
from tripkit.llm import ModelClient, ModelError
from tripkit.models import (
    BundleOutput,
    BundlesRequested,
    FinalOutput,
    Preferences,
    RunRecord,
    Session,
    Status,
    Summary,
    utcnow,
)
from tripkit.sessions import SessionClosed
from tripkit.store import SessionStore


class FunctionFailed(BaseModel):
    """The data of Inngest's ``inngest/function.failed`` event (the fields we read)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str | None = None
    error: dict[str, Any] = Field(default_factory=dict)
    event: dict[str, Any] = Field(default_factory=dict)


class FunctionCancelled(BaseModel):
    """The data of Inngest's ``inngest/function.cancelled`` event (the fields we read)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str | None = None
    event: dict[str, Any] = Field(default_factory=dict)


#: The session's ``error`` when Inngest cancelled the run for another reason than its
#: deadline (the dashboard, the REST API, a bulk cancellation).
CANCELLED_IN_INNGEST = "Generation cancelled in Inngest (the dashboard or its API)."
#: Inngest counts the deadline from the run's start; the session's ``startedAt`` is
#: written inside the first step, a moment later.
DEADLINE_SLACK = timedelta(seconds=1)


def deadline_error(deadline: int) -> str:
    return f"Generation stopped: it passed its deadline of {deadline} s (TRIPKIT_RUN_DEADLINE)."


def passed_deadline(started_at: datetime | None, now: datetime, deadline: int) -> bool:
    """Whether a run Inngest cancelled had run for its whole deadline (a run that never
    started was cancelled by someone, not timed out: only ``timeouts.finish`` is set)."""
    if started_at is None:
        return False
    return now - started_at >= timedelta(seconds=deadline) - DEADLINE_SLACK


def _wire(model: BaseModel) -> dict[str, Any]:
    """A step's output as Inngest stores it (JSON, camelCase)."""
    return model.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class BundleJob:
    """What one ``bundle-<i>`` step needs: for bundle 0 what the start event says (it
    rebuilds the queued session from that), later the session and the bundles the
    earlier steps returned."""

    session_id: str
    index: int
    earlier: list[BundleOutput]
    run_id: str
    attempt: int
    preferences: Preferences | None = None
    created_at: datetime | None = None


@dataclass
class Worker:
    """What the steps need; built once per app process."""

    store: SessionStore
    model: Callable[[], ModelClient]

    async def bundle(self, job: BundleJob) -> dict[str, Any]:
        async with _stop_when_hopeless():
            if job.earlier:
                session = job.earlier[-1].session
            else:
                session = await self.store.mark_running(await self._queued(job))
            written: dict[str, Any] = {}

            async def on_summary(summary: Summary) -> None:
                written["session"] = await self.store.add_summary(session, summary)
                written["at"] = utcnow()

            avoid = [o.bundle.destination for o in job.earlier]
            _, bundle, usage = await self.model().bundle(
                session.preferences, job.index, avoid, on_summary
            )
            output = BundleOutput(
                session=written["session"],
                bundle=bundle,
                usage=usage,
                attempt=job.attempt,
                summary_at=written["at"],
            )
            if job.index == session.progress.total - 1:
                output = await self._complete(job, output)
        return _wire(output)

    async def _queued(self, job: BundleJob) -> Session:
        """The session as the API created it: rebuilt from the start event, byte for byte
        (no read); read for an event an older tripkit sent, without ``createdAt``."""
        if job.created_at is None or job.preferences is None:
            return await self.store.get(job.session_id)
        return sessions.new(job.session_id, job.preferences, now=job.created_at)

    async def finalize(self, job: BundleJob, last: BundleOutput) -> dict[str, Any]:
        """Complete a run an older tripkit started, whose bundle steps (memoized) did not
        complete the session: it had a separate ``finalize`` step for that."""
        async with _stop_when_hopeless():
            done = await self._complete(job, last)
        return _wire(
            FinalOutput(
                session_id=job.session_id, status=done.session.status, bundles=len(job.earlier) + 1
            )
        )

    async def _complete(self, job: BundleJob, last: BundleOutput) -> BundleOutput:
        """The last step's end: the run record first, then the session with every bundle
        and ``completed`` as the step's final write, so only a crash after that write
        (not a failed record write) makes a retry write the last bundle again. The store
        gets the session as the step last wrote it, so it sees (and announces) the
        transition to ``completed``."""
        outputs = [*job.earlier, last]
        record = run_record(job.session_id, job.run_id, outputs, last.session, utcnow())
        await self.store.put_run_record(record)
        done = await self.store.complete(last.session, [o.bundle for o in outputs])
        return last.model_copy(update={"session": done})

    async def fail(self, session_id: str, error: str, record: dict[str, Any]) -> None:
        """Mark the session failed, unless it ended otherwise first (a cancel refuses the
        run's next write, which ends the run this way); the record says which."""
        try:
            session = await self.store.fail(session_id, error)
        except SessionNotFound:
            return  # expired meanwhile: there is nothing left to mark
        ended = RunRecord.model_validate(record)
        if session.status is Status.CANCELLED:
            ended = ended.model_copy(
                update={"failed_at": None, "cancelled_at": session.completed_at}
            )
        await self.store.put_run_record(
            ended.model_copy(update={"status": session.status, "error": session.error})
        )

    async def stopped(self, session_id: str, run_id: str | None, deadline: int) -> None:
        """Inngest cancelled the run: a cancel through the API finished the session
        already; otherwise the deadline passed (the session fails with that cause) or
        someone cancelled it in Inngest (the session says ``cancelled``)."""
        try:
            session = await self.store.get(session_id)
            if not session.is_final:
                if passed_deadline(session.started_at, utcnow(), deadline):
                    session = await self.store.fail(session, deadline_error(deadline))
                else:
                    session, _ = await self.store.cancel(session_id, CANCELLED_IN_INNGEST)
        except SessionNotFound:
            return  # expired meanwhile: there is nothing left to mark
        if session.status is Status.COMPLETED:
            return  # finished before the cancel took effect; finalize wrote its record
        ended = "cancelled_at" if session.status is Status.CANCELLED else "failed_at"
        record = RunRecord(
            session_id=session_id,
            run_id=run_id,
            status=session.status,
            error=session.error,
            queued_at=session.created_at,
            started_at=session.started_at,
            first_summary_at=session.first_summary_at,
            **{ended: session.completed_at},
        )
        await self.store.put_run_record(record)


@contextlib.asynccontextmanager
async def _stop_when_hopeless() -> AsyncIterator[None]:
    """Errors that no retry can fix end the run at once (``on_failure`` then marks the
    session): a rejected or missing model key, an unknown model, a session that expired
    or was closed meanwhile. Everything else is retried by Inngest with backoff."""
    try:
        yield
    except ModelError as exc:
        if exc.retriable:
            raise
        raise inngest.NonRetriableError(str(exc)) from None
    except (SessionNotFound, SessionClosed) as exc:
        raise inngest.NonRetriableError(str(exc)) from None


def run_record(
    session_id: str,
    run_id: str,
    outputs: list[BundleOutput],
    session: Session,
    completed_at: datetime,
) -> RunRecord:
    """The record of a run whose steps all succeeded: one step and one model call per
    bundle (retried attempts are in ``attempts``). Written just before the session is
    completed, so its ``completed_at`` is at most the session's."""
    return RunRecord(
        session_id=session_id,
        run_id=run_id,
        status=Status.COMPLETED,
        queued_at=session.created_at,
        started_at=session.started_at,
        first_summary_at=outputs[0].summary_at if outputs else None,
        summary_at=[o.summary_at for o in outputs],
        completed_at=completed_at,
        attempts={f"bundle-{i}": o.attempt for i, o in enumerate(outputs)},
        bundles=len(outputs),
        steps=len(outputs),
        model_calls=len(outputs),
        usage=[o.usage for o in outputs],
    )


def create_functions(
    client: inngest.Inngest, worker: Worker, *, concurrency: int = 10, deadline: int = 1800
) -> list[inngest.Function[Any]]:
    """The Inngest functions this app serves: the generation (with its failure handler)
    and the one that marks a session whose run Inngest cancelled.

    ``concurrency`` caps the generation steps executing at once, across all runs and
    worker processes: Inngest holds the rest in its queue (oldest run first), so a burst
    of requests becomes a queue of sessions that say ``queued``, not a pile of model
    streams that starve the host and trip the model's rate limits. A cancel event for
    the run's session (``cancel_on``) has Inngest drop a queued run and stop a running
    one at its next step boundary. ``deadline`` (seconds) is the run's ``timeouts.finish``.
    """

    async def on_failure(ctx: inngest.Context) -> None:
        failed = FunctionFailed.model_validate(ctx.event.data)
        session_id = BundlesRequested.model_validate(failed.event.get("data")).session_id
        error = str(failed.error.get("message") or "the run failed after its retries")
        record = RunRecord(
            session_id=session_id,
            run_id=failed.run_id,
            status=Status.FAILED,
            failed_at=utcnow(),
        )
        await ctx.step.run(
            "mark-failed", worker.fail, session_id, f"Generation failed: {error}", _wire(record)
        )

    @client.create_function(
        fn_id=FUNCTION_ID,
        name=FUNCTION_NAME,
        trigger=inngest.TriggerEvent(event=EVENT_NAME),
        retries=RETRIES,
        on_failure=on_failure,
        concurrency=[inngest.Concurrency(limit=concurrency)],
        cancel=[
            inngest.Cancel(
                event=CANCEL_EVENT_NAME, if_exp="event.data.sessionId == async.data.sessionId"
            )
        ],
        timeouts=inngest.Timeouts(finish=timedelta(seconds=deadline)),
    )
    async def generate_bundles(ctx: inngest.Context) -> dict[str, Any]:
        requested = BundlesRequested.model_validate(ctx.event.data)
        outputs: list[BundleOutput] = []
        for index in range(requested.preferences.bundle_count):
            job = BundleJob(
                requested.session_id,
                index,
                list(outputs),
                ctx.run_id,
                ctx.attempt,
                requested.preferences,
                requested.created_at,
            )
            raw = await ctx.step.run(f"bundle-{index}", worker.bundle, job)
            outputs.append(BundleOutput.model_validate(raw))
        final = outputs[-1].session
        if not final.is_final:  # resumed after an upgrade: an older tripkit started it
            job = BundleJob(
                requested.session_id, len(outputs) - 1, outputs[:-1], ctx.run_id, ctx.attempt
            )
            return await ctx.step.run("finalize", worker.finalize, job, outputs[-1])
        return _wire(
            FinalOutput(session_id=final.session_id, status=final.status, bundles=len(outputs))
        )

    @client.create_function(
        fn_id=STOPPED_FUNCTION_ID,
        name="Mark a stopped generation",
        trigger=inngest.TriggerEvent(
            event=FUNCTION_CANCELLED_EVENT,
            expression=f"event.data.function_id == '{FUNCTION_SLUG}'",
        ),
        retries=RETRIES,
    )
    async def mark_stopped(ctx: inngest.Context) -> None:
        cancelled = FunctionCancelled.model_validate(ctx.event.data)
        session_id = BundlesRequested.model_validate(cancelled.event.get("data")).session_id
        await ctx.step.run("mark-stopped", worker.stopped, session_id, cancelled.run_id, deadline)

    return [generate_bundles, mark_stopped]
