"""Starting and cancelling a generation: the session write, then the Inngest event.

If the start event cannot be sent, the session is marked failed with the cause, so no
session waits in ``queued`` for a run that will never come. A cancel writes the final
``cancelled`` status first (from then on no write of the run lands), then sends the
event the function's ``cancel_on`` matches, so Inngest stops the run at its next step
boundary. An app process sends through one :class:`EventSender`, which turns a burst of
requests into a few batched sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import inngest

from tripkit.config import Settings
from tripkit.constants import APP_ID, CANCEL_EVENT_NAME, EVENT_NAME
from tripkit.errors import StoreError, TripkitError
from tripkit.models import BundlesRequested, Preferences, Session, Status
from tripkit.store import SessionStore

log = logging.getLogger("tripkit.trigger")

#: What a session cancelled through the API, the CLI or the client says in ``error``.
CANCELLED_ON_REQUEST = "Generation cancelled on request."


class TriggerError(TripkitError):
    """The run could not be queued with Inngest."""

    remedy = (
        "Check INNGEST_EVENT_KEY and that Inngest is reachable (INNGEST_BASE_URL, or Inngest "
        "Cloud); locally, is `tripkit dev` running?"
    )


def inngest_client(settings: Settings) -> inngest.Inngest:
    """The app's Inngest client: signed cloud mode when a signing key is set, else dev.
    The API sends events with it; the worker serves its function with the same client."""
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


class EventSender:
    """Sends events through the Inngest SDK, a burst as a few batched requests.

    An event that arrives while fewer than ``in_flight`` sends are under way leaves at
    once, alone. Events that arrive while they all are wait and leave together (up to
    ``max_batch`` per request) as soon as one finishes. Why: the SDK's HTTP client
    (httpx 0.28) spends milliseconds of CPU per request once many wait in its pool, so
    200 sends at once cost the API more than everything else it does for 200 requests;
    as a handful of batches they cost almost nothing. Inngest counts events, not
    requests, so batching changes nothing in what it bills or runs. A caller that gives
    up waiting never cancels a send under way: the batch goes out for everyone in it.
    """

    def __init__(self, client: inngest.Inngest, *, in_flight: int = 4, max_batch: int = 100):
        self.client = client
        self.in_flight = in_flight
        self.max_batch = max_batch
        self.requests = 0  # HTTP requests made, for the benchmark and the tests
        self._pending: list[tuple[inngest.Event, asyncio.Future[str]]] = []
        self._senders: set[asyncio.Task[None]] = set()

    async def send(self, event: inngest.Event) -> str:
        """Send one event; returns the id Inngest gave it."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._start_senders()
        return await asyncio.shield(future)

    def _start_senders(self) -> None:
        while self._pending and len(self._senders) < self.in_flight:
            batch, self._pending = (
                self._pending[: self.max_batch],
                self._pending[self.max_batch :],
            )
            task = asyncio.get_running_loop().create_task(self._send_batch(batch))
            self._senders.add(task)
            task.add_done_callback(self._sender_done)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        self._senders.discard(task)
        self._start_senders()

    async def _send_batch(self, batch: Sequence[tuple[inngest.Event, asyncio.Future[str]]]) -> None:
        self.requests += 1
        try:
            ids = await self.client.send([event for event, _ in batch])
        except BaseException as exc:  # every caller in the batch gets the cause
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), event_id in zip(batch, ids, strict=False):
            if not future.done():
                future.set_result(event_id)
        for _, future in batch[len(ids) :]:
            if not future.done():
                future.set_exception(TriggerError("Inngest accepted fewer events than sent."))

    async def aclose(self, timeout: float = 10.0) -> None:
        """Let sends under way finish (at shutdown)."""
        if self._senders:
            await asyncio.wait(set(self._senders), timeout=timeout)


def event_for(session: Session) -> inngest.Event:
    """The event that starts the run; its id is the session id, so Inngest drops repeats.
    It carries what the queued session was made of, so the run need not read it."""
    data = BundlesRequested(
        session_id=session.session_id,
        preferences=session.preferences,
        created_at=session.created_at,
    )
    return inngest.Event(
        name=EVENT_NAME,
        data=data.model_dump(mode="json", by_alias=True),
        id=session.session_id,
    )


def cancel_event_for(session_id: str) -> inngest.Event:
    """The event the function's ``cancel_on`` matches by ``data.sessionId``; its id makes
    a repeated send one event."""
    return inngest.Event(
        name=CANCEL_EVENT_NAME, data={"sessionId": session_id}, id=f"cancel-{session_id}"
    )


async def _send(event: inngest.Event, client: inngest.Inngest, sender: EventSender | None) -> None:
    if sender is None:
        await client.send(event)
    else:
        await sender.send(event)


async def request_bundles(
    preferences: Preferences,
    *,
    store: SessionStore,
    client: inngest.Inngest,
    sender: EventSender | None = None,
    idempotency_key: str | None = None,
) -> tuple[Session, bool]:
    """Create a queued session and queue its generation: the session and ``True``.

    With an ``idempotency_key`` a repeat returns the first request's session and
    ``False``. While that session is still queued the repeat sends the start event
    again: it has the same id (the session id), so Inngest starts one run however many
    arrive, and a first request that died between its write and its send still runs.
    """
    if idempotency_key is None:
        session, created = await store.create(preferences), True
    else:
        session, created = await store.create_once(preferences, idempotency_key)
    if not created and session.status is not Status.QUEUED:
        return session, False
    try:
        await _send(event_for(session), client, sender)
    except Exception as exc:  # whatever stops the send, the session must not stay queued
        cause = _describe(exc)
        if created:  # a repeat leaves the first request's session alone
            with contextlib.suppress(StoreError):  # the original problem is the one to report
                await store.fail(session, f"Could not queue the generation: {cause}")
        raise TriggerError(f"Could not queue the generation with Inngest: {cause}.") from None
    return session, created


async def cancel_bundles(
    session_id: str,
    *,
    store: SessionStore,
    client: inngest.Inngest,
    sender: EventSender | None = None,
) -> tuple[Session, bool]:
    """Cancel a generation: the session (now ``cancelled``) and ``True``, or the session
    as it is and ``False`` when it had finished already (:class:`SessionNotFound` when
    there is none). The run's writes are refused from the moment this returns; the
    event then has Inngest drop the rest of the run (or the run not yet started)."""
    session, cancelled = await store.cancel(session_id, CANCELLED_ON_REQUEST)
    if cancelled:
        try:
            await _send(cancel_event_for(session_id), client, sender)
        except Exception as exc:
            # The session is final and refuses the run's writes, so the run ends at its
            # next write anyway; Inngest only stops it sooner.
            log.warning("cancel event for %s not sent: %s", session_id, _describe(exc))
    return session, cancelled


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]
