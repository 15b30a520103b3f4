"""Starting a generation: create the session, then send the event that starts the run.

If the event cannot be sent, the session is marked failed with the cause, so no session
waits in ``queued`` for a run that will never come.
"""

from __future__ import annotations

import contextlib

import inngest

from tripkit.errors import StoreError, TripkitError
from tripkit.models import Preferences, Session
from tripkit.store import SessionStore
from tripkit.worker import EVENT_NAME, BundlesRequested


class TriggerError(TripkitError):
    """The run could not be queued with Inngest."""

    remedy = (
        "Check INNGEST_EVENT_KEY and that Inngest is reachable (INNGEST_BASE_URL, or Inngest "
        "Cloud); locally, is `tripkit dev` running?"
    )


def event_for(session: Session) -> inngest.Event:
    """The event that starts the run; its id is the session id, so Inngest drops repeats."""
    data = BundlesRequested(session_id=session.session_id, preferences=session.preferences)
    return inngest.Event(
        name=EVENT_NAME,
        data=data.model_dump(mode="json", by_alias=True),
        id=session.session_id,
    )


async def request_bundles(
    preferences: Preferences, *, store: SessionStore, client: inngest.Inngest
) -> Session:
    """Create a queued session and queue its generation; returns the new session."""
    session = await store.create(preferences)
    try:
        await client.send(event_for(session))
    except Exception as exc:  # whatever stops the send, the session must not stay queued
        cause = _describe(exc)
        with contextlib.suppress(StoreError):  # the original problem is the one to report
            await store.fail(session, f"Could not queue the generation: {cause}")
        raise TriggerError(f"Could not queue the generation with Inngest: {cause}.") from None
    return session


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]
