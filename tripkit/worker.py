"""The Inngest function "generate-bundles" ("Generate Trip Bundles", app "special-trips").

The run is a chain of steps, so a crash or a redeploy resumes where it stopped and a
finished bundle is never generated again (Inngest memoizes each step's output):

1. ``plan``: mark the session running, ask the model for one outline per bundle;
2. ``bundle-<i>``, one per bundle, in order: stream bundle *i*, writing its summary into
   the session the moment the summary line is complete;
3. ``finalize``: write the bundles and the final status, and the run record.

Each step passes the session document it wrote to the next one, so every write is a
single ``SET ... XX`` (see :mod:`tripkit.store`) and a retried step overwrites what its
earlier attempt wrote. All side effects happen inside steps. If the run fails for good,
``on_failure`` marks the session failed with the cause, so polling always ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import inngest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tripkit import keys
from tripkit.config import Settings
from tripkit.errors import SessionNotFound
from tripkit.model import ModelClient, ModelError, Outline
from tripkit.models import Bundle, Preferences, Session, Summary, WireModel, utcnow
from tripkit.sessions import SessionClosed
from tripkit.store import SessionStore

APP_ID = "special-trips"
FUNCTION_ID = "generate-bundles"
FUNCTION_NAME = "Generate Trip Bundles"
EVENT_NAME = "trips/bundles.requested"
#: Retries per step after the first attempt (Inngest's default is 4, so 5 attempts).
RETRIES = 4


class BundlesRequested(WireModel):
    """The event's data: which session to fill, with what preferences."""

    session_id: str
    preferences: Preferences

    @field_validator("session_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return keys.validate_session_id(value)


class FunctionFailed(BaseModel):
    """The data of Inngest's ``inngest/function.failed`` event (the fields we read)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str | None = None
    error: dict[str, Any] = Field(default_factory=dict)
    event: dict[str, Any] = Field(default_factory=dict)


def inngest_client(settings: Settings) -> inngest.Inngest:
    """The app's Inngest client: signed cloud mode when a signing key is set, else dev."""
    signing = settings.inngest_signing_key
    return inngest.Inngest(
        app_id=APP_ID,
        is_production=signing is not None,
        signing_key=signing.get_secret_value() if signing else None,
        event_key=(
            settings.inngest_event_key.get_secret_value() if settings.inngest_event_key else None
        ),
        api_base_url=settings.inngest_base_url,
        event_api_base_url=settings.inngest_base_url,
    )


@dataclass
class Worker:
    """What the steps need; built once per app process."""

    store: SessionStore
    model: Callable[[], ModelClient]

    async def plan(self, session_id: str, attempt: int) -> dict[str, Any]:
        async with _stop_when_hopeless():
            session = await self.store.mark_running(await self.store.get(session_id))
            outlines, usage = await self.model().plan(session.preferences)
        return {
            "session": _dump(session),
            "outlines": [o.model_dump(mode="json", by_alias=True) for o in outlines],
            "usage": usage.as_dict(),
            "attempt": attempt,
            "startedAt": _iso(session.started_at),
        }

    async def bundle(self, state: dict[str, Any], outline: Outline, attempt: int) -> dict[str, Any]:
        session = Session.model_validate(state)
        written: dict[str, Any] = {}

        async def on_summary(summary: Summary) -> None:
            written["session"] = await self.store.add_summary(session, summary)
            written["at"] = utcnow()

        async with _stop_when_hopeless():
            _, bundle, usage = await self.model().bundle(session.preferences, outline, on_summary)
        return {
            "session": _dump(written["session"]),
            "bundle": bundle.model_dump(mode="json", by_alias=True),
            "usage": usage.as_dict(),
            "attempt": attempt,
            "summaryAt": _iso(written["at"]),
        }

    async def finalize(
        self, state: dict[str, Any], bundles: list[dict[str, Any]], record: dict[str, Any]
    ) -> dict[str, Any]:
        async with _stop_when_hopeless():
            session = await self.store.complete(
                Session.model_validate(state), [Bundle.model_validate(b) for b in bundles]
            )
        record = {**record, "status": "completed", "completedAt": _iso(session.completed_at)}
        await self.store.put_run_record(session.session_id, record)
        return {"sessionId": session.session_id, "status": "completed", "bundles": len(bundles)}

    async def fail(self, session_id: str, error: str, record: dict[str, Any]) -> None:
        try:
            session = await self.store.fail(session_id, error)
        except SessionNotFound:
            return  # expired meanwhile: there is nothing left to mark
        await self.store.put_run_record(
            session_id, {**record, "status": session.status.value, "error": session.error}
        )


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


def _dump(session: Session) -> dict[str, Any]:
    return session.model_dump(mode="json", by_alias=True)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def create_functions(
    client: inngest.Inngest, worker: Worker, *, concurrency: int = 10
) -> list[inngest.Function[Any]]:
    """The Inngest functions this app serves (one, plus its failure handler).

    ``concurrency`` caps the generation steps executing at once, across all runs and
    worker processes: Inngest holds the rest in its queue (oldest run first), so a burst
    of requests becomes a queue of sessions that say ``queued``, not a pile of model
    streams that starve the host and trip the model's rate limits.
    """

    async def on_failure(ctx: inngest.Context) -> None:
        failed = FunctionFailed.model_validate(ctx.event.data)
        session_id = BundlesRequested.model_validate(failed.event.get("data")).session_id
        error = str(failed.error.get("message") or "the run failed after its retries")
        record = {"sessionId": session_id, "runId": failed.run_id, "failedAt": _iso(utcnow())}
        await ctx.step.run(
            "mark-failed", worker.fail, session_id, f"Generation failed: {error}", record
        )

    @client.create_function(
        fn_id=FUNCTION_ID,
        name=FUNCTION_NAME,
        trigger=inngest.TriggerEvent(event=EVENT_NAME),
        retries=RETRIES,
        on_failure=on_failure,
        concurrency=[inngest.Concurrency(limit=concurrency)],
    )
    async def generate_bundles(ctx: inngest.Context) -> dict[str, Any]:
        session_id = BundlesRequested.model_validate(ctx.event.data).session_id
        planned = await ctx.step.run("plan", worker.plan, session_id, ctx.attempt)
        state = planned["session"]
        outputs: list[dict[str, Any]] = []
        for raw in planned["outlines"]:
            outline = Outline.model_validate(raw)
            out = await ctx.step.run(
                f"bundle-{outline.index}", worker.bundle, state, outline, ctx.attempt
            )
            state = out["session"]
            outputs.append(out)
        record = {
            "sessionId": session_id,
            "runId": ctx.run_id,
            "queuedAt": Session.model_validate(planned["session"]).created_at.isoformat(),
            "startedAt": planned["startedAt"],
            "firstSummaryAt": outputs[0]["summaryAt"] if outputs else None,
            "summaryAt": [o["summaryAt"] for o in outputs],
            "attempts": {"plan": planned["attempt"]}
            | {f"bundle-{i}": o["attempt"] for i, o in enumerate(outputs)},
            "bundles": len(outputs),
            "steps": 2 + len(outputs),
            "modelCalls": 1 + len(outputs),
            "usage": [planned["usage"], *(o["usage"] for o in outputs)],
        }
        return await ctx.step.run(
            "finalize", worker.finalize, state, [o["bundle"] for o in outputs], record
        )

    return [generate_bundles]
