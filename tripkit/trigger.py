"""Starting a generation: create the session, then send the event that starts the run.

If the event cannot be sent, the session is marked failed with the cause, so no session
waits in ``queued`` for a run that will never come. An app process sends through one
:class:`EventSender`, which turns a burst of requests into a few batched sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import inngest

from tripkit.config import Settings
from tripkit.constants import APP_ID, EVENT_NAME
from tripkit.errors import StoreError, TripkitError
from tripkit.models import BundlesRequested, Preferences, Session
from tripkit.store import SessionStore


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
    """The event that starts the run; its id is the session id, so Inngest drops repeats."""
    data = BundlesRequested(session_id=session.session_id, preferences=session.preferences)
    return inngest.Event(
        name=EVENT_NAME,
        data=data.model_dump(mode="json", by_alias=True),
        id=session.session_id,
    )


async def request_bundles(
    preferences: Preferences,
    *,
    store: SessionStore,
    client: inngest.Inngest,
    sender: EventSender | None = None,
) -> Session:
    """Create a queued session and queue its generation; returns the new session."""
    session = await store.create(preferences)
    event = event_for(session)
    try:
        if sender is None:
            await client.send(event)
        else:
            await sender.send(event)
    except Exception as exc:  # whatever stops the send, the session must not stay queued
        cause = _describe(exc)
        with contextlib.suppress(StoreError):  # the original problem is the one to report
            await store.fail(session, f"Could not queue the generation: {cause}")
        raise TriggerError(f"Could not queue the generation with Inngest: {cause}.") from None
    return session


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]
