"""Pure session logic: the state transitions and the bytes Redis holds. No I/O here.

A session is one JSON document. Each transition returns a new :class:`Session`; the
store writes it whole. Transitions are idempotent (a summary replaces the one with the
same index) and never leave a final state, except to repeat it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import ValidationError

from tripkit.errors import StoreError, TripkitError
from tripkit.models import Bundle, Preferences, Progress, Session, Status, Summary, utcnow

MAX_ERROR_CHARS = 2000


class SessionClosed(TripkitError):
    """A write tried to move a completed, failed or cancelled session somewhere else."""

    remedy = "A finished session is never reopened; start a new generation instead."

    def __init__(self, session: Session) -> None:
        super().__init__(f"Session {session.session_id} is already {session.status.value}.")
        self.session = session


def new(session_id: str, preferences: Preferences, now: datetime | None = None) -> Session:
    now = now or utcnow()
    return Session(
        session_id=session_id,
        preferences=preferences,
        progress=Progress(done=0, total=preferences.bundle_count),
        created_at=now,
        updated_at=now,
    )


def _guard(session: Session, target: Status) -> None:
    if session.is_final and session.status != target:
        raise SessionClosed(session)


def start(session: Session, now: datetime | None = None) -> Session:
    """queued -> running; running stays running with its first start time."""
    if session.status in (Status.RUNNING, Status.COMPLETED):
        return session
    _guard(session, Status.RUNNING)
    now = now or utcnow()
    return session.model_copy(
        update={"status": Status.RUNNING, "started_at": now, "updated_at": now}
    )


def add_summary(session: Session, summary: Summary, now: datetime | None = None) -> Session:
    """Insert or replace the summary with ``summary.index``; the session is running."""
    _guard(session, Status.RUNNING)
    if summary.index >= session.progress.total:
        raise ValueError(
            f"summary index {summary.index} is out of range for {session.progress.total} bundles"
        )
    now = now or utcnow()
    started = start(session, now)
    kept = [s for s in started.summaries if s.index != summary.index]
    summaries = sorted([*kept, summary], key=lambda s: s.index)
    return started.model_copy(
        update={
            "summaries": summaries,
            "progress": Progress(done=len(summaries), total=session.progress.total),
            "first_summary_at": started.first_summary_at or now,
            "updated_at": now,
        }
    )


def complete(session: Session, bundles: Iterable[Bundle], now: datetime | None = None) -> Session:
    """The generation finished: bundles in index order, status completed."""
    _guard(session, Status.COMPLETED)
    now = now or utcnow()
    ordered = sorted(bundles, key=lambda b: b.index)
    return session.model_copy(
        update={
            "status": Status.COMPLETED,
            "bundles": ordered,
            "error": None,
            "progress": Progress(done=session.progress.total, total=session.progress.total),
            "started_at": session.started_at or now,
            "completed_at": session.completed_at or now,
            "updated_at": now,
        }
    )


def fail(session: Session, error: str, now: datetime | None = None) -> Session:
    """The generation failed for good; ``error`` says why (and what to check)."""
    _guard(session, Status.FAILED)
    now = now or utcnow()
    message = error.strip() or "The generation failed."
    return session.model_copy(
        update={
            "status": Status.FAILED,
            "error": message[:MAX_ERROR_CHARS],
            "completed_at": session.completed_at or now,
            "updated_at": now,
        }
    )


def cancel(session: Session, reason: str, now: datetime | None = None) -> Session:
    """Stopped on request before it finished: what it wrote so far stays readable."""
    _guard(session, Status.CANCELLED)
    if session.status is Status.CANCELLED:
        return session
    now = now or utcnow()
    return session.model_copy(
        update={
            "status": Status.CANCELLED,
            "error": reason.strip()[:MAX_ERROR_CHARS] or None,
            "completed_at": now,
            "updated_at": now,
        }
    )


def encode(session: Session) -> bytes:
    """The document stored in Redis: the same camelCase JSON the API serves."""
    return session.model_dump_json(by_alias=True).encode()


def decode(raw: bytes) -> Session:
    try:
        return Session.model_validate_json(raw)
    except ValidationError:
        raise StoreError(
            "A session document in Redis is corrupt or from an incompatible tripkit version.",
            remedy="Check that nothing else writes under the tripkit: key prefix "
            "(TRIPKIT_KEY_PREFIX).",
        ) from None
