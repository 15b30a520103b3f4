"""What a push client sees: a session's events, derived from its document. No I/O here.

A session's history is implied by its one document (see :mod:`tripkit.store`): it was
queued, it started, each summary landed, it ended. So the events are derived from the
document, and an event's id is its slot in that history rather than a counter, which
makes a replay yield the same ids as the live stream did:

====== ========================================== ==========================
id     ``event:``                                 when
====== ========================================== ==========================
1      ``status`` (``queued``)                    always
2      ``status`` (``running``)                   once a step started
3 + i  ``summary`` (summary *i*, 0-based)         summary *i* landed
3 + n  the final status: ``completed``, ``failed`` the run ended (n bundles)
====== ========================================== ==========================

Ids grow in the order things happen, because the worker writes summaries in index
order; so ``Last-Event-ID: k`` means "everything up to k seen". The final event is
named after the final status and carries :class:`FinalData`, so a new final status
needs no code here. A summary rewritten by a retried step keeps its id: a client that
saw the first text keeps it, and the final event's bundles are the truth.

The store publishes the events each write adds (:func:`announced`, as one
:func:`encode_notification` payload); the push endpoint replays :func:`derive` of the
document and merges it with the live notifications through a :class:`Cursor`, which
drops what the client has already seen. A client folds the events back into a document
with :func:`apply`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tripkit.errors import TripkitError
from tripkit.models import Bundle, Progress, Session, Status, Summary, WireModel

#: The ``event:`` names besides the final ones (which are the final status's value).
STATUS: Final = "status"
SUMMARY: Final = "summary"

QUEUED_ID: Final = 1
RUNNING_ID: Final = 2
_FIRST_SUMMARY_ID: Final = 3
#: Larger than any id a session can have (3 + the most bundles), to bound what we parse.
MAX_EVENT_ID: Final = 1_000_000


class InvalidEventId(TripkitError):
    """A ``Last-Event-ID`` this endpoint cannot have sent."""

    remedy = (
        "Send back the id: of the last event you received, or nothing to get the whole history."
    )


class EventData(WireModel):
    """The ``data:`` of an event, as camelCase JSON. Fields a newer server adds are
    ignored, so an older client still reads its events."""

    model_config = ConfigDict(extra="ignore")


class StatusData(EventData):
    """``event: status``: the session is queued (``at`` its creation) or running
    (``at`` its start)."""

    status: Status
    at: datetime


class SummaryData(EventData):
    """``event: summary``: one bundle's summary landed; ``progress.done`` counts it."""

    summary: Summary
    progress: Progress


class FinalData(EventData):
    """The last event, named after the final status: the bundles when ``completed``,
    the reason in ``error`` otherwise."""

    status: Status
    bundles: list[Bundle] = Field(default_factory=list)
    error: str | None = None
    progress: Progress
    completed_at: datetime | None = None


Data = StatusData | SummaryData | FinalData


@dataclass(frozen=True)
class SessionEvent:
    """One event of a session's history: ``id:``, ``event:`` and ``data:`` of SSE."""

    id: int
    event: str
    data: Data

    @property
    def is_final(self) -> bool:
        return isinstance(self.data, FinalData)

    def data_json(self) -> str:
        return self.data.model_dump_json(by_alias=True)


def summary_id(index: int) -> int:
    return _FIRST_SUMMARY_ID + index


def final_id(total: int) -> int:
    """The id of the final event of a session of ``total`` bundles: always the largest."""
    return _FIRST_SUMMARY_ID + total


def derive(session: Session) -> list[SessionEvent]:
    """Every event the session's history holds so far, in id order."""
    total = session.progress.total
    events = [
        SessionEvent(QUEUED_ID, STATUS, StatusData(status=Status.QUEUED, at=session.created_at))
    ]
    if session.started_at is not None:
        events.append(
            SessionEvent(
                RUNNING_ID, STATUS, StatusData(status=Status.RUNNING, at=session.started_at)
            )
        )
    indexes = sorted(s.index for s in session.summaries)
    for summary in sorted(session.summaries, key=lambda s: s.index):
        # As it was when this summary landed: the worker writes them in index order.
        done = sum(1 for i in indexes if i <= summary.index)
        events.append(
            SessionEvent(
                summary_id(summary.index),
                SUMMARY,
                SummaryData(summary=summary, progress=Progress(done=done, total=total)),
            )
        )
    if session.is_final:
        final = FinalData(
            status=session.status,
            bundles=session.bundles,
            error=session.error,
            progress=session.progress,
            completed_at=session.completed_at,
        )
        events.append(SessionEvent(final_id(total), session.status.value, final))
    return events


def apply(session: Session, event: SessionEvent) -> Session:
    """The document a push client holds after ``event``: the client's side of
    :func:`derive`, so a panel shows the same session whether it polls or follows.
    The worker's times it cannot know (``first_summary_at``, ``updated_at``) stay as
    they were; the final event carries everything a final document adds."""
    data = event.data
    if session.is_final:
        return session
    if isinstance(data, StatusData):
        if data.status is Status.RUNNING:
            return session.model_copy(
                update={"status": Status.RUNNING, "started_at": session.started_at or data.at}
            )
        return session
    if isinstance(data, SummaryData):
        kept = [s for s in session.summaries if s.index != data.summary.index]
        summaries = sorted([*kept, data.summary], key=lambda s: s.index)
        return session.model_copy(
            update={
                "status": Status.RUNNING,
                "summaries": summaries,
                # as the store counts: what landed, whatever order the events came in
                "progress": Progress(done=len(summaries), total=data.progress.total),
            }
        )
    return session.model_copy(
        update={
            "status": data.status,
            "bundles": data.bundles,
            "error": data.error,
            "progress": data.progress,
            "completed_at": data.completed_at,
        }
    )


def announced(before: Session | None, after: Session) -> list[SessionEvent]:
    """What the store publishes for a write from ``before`` (what the writer last saw;
    ``None``: unknown) to ``after``: the summaries it added, and always the small status
    events and the final one. So a write repeated after a failed ``PUBLISH`` (a retried
    step that read the session back, already changed) still announces its news; clients
    drop the ids they have."""
    seen = {e.id for e in derive(before)} if before is not None else set()
    return [e for e in derive(after) if e.id not in seen or e.event == STATUS or e.is_final]


# --- the notification the store publishes -----------------------------------------------


class _WireEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    event: str
    data: dict[str, Any]


def parse(event_id: int, event: str, data: Any) -> SessionEvent:
    """An event from its three parts (``data`` as decoded JSON); ``ValueError`` if they
    do not make one. Any event name but ``status`` and ``summary`` is a final one."""
    if not 0 < event_id <= MAX_EVENT_ID:
        raise ValueError(f"event id {event_id} is out of range")
    model: type[Data]
    if event == STATUS:
        model = StatusData
    elif event == SUMMARY:
        model = SummaryData
    else:
        model = FinalData
    try:
        return SessionEvent(event_id, event, model.model_validate(data))
    except ValidationError as exc:
        raise ValueError(f"malformed {event!r} event: {exc.error_count()} problem(s)") from None


def encode_notification(session_id: str, events: Sequence[SessionEvent]) -> bytes:
    """``<sessionId> <JSON list of events>``: the id first, so a hub routes a message
    without decoding the JSON of sessions nobody follows."""
    body = [
        {"id": e.id, "event": e.event, "data": e.data.model_dump(mode="json", by_alias=True)}
        for e in events
    ]
    return f"{session_id} {json.dumps(body, separators=(',', ':'))}".encode()


def notification_session(payload: bytes) -> str:
    """The session a notification is about (``""`` for a payload that is not one)."""
    head, _, _ = payload.partition(b" ")
    return head.decode("ascii", "replace")


def decode_notification(payload: bytes) -> list[SessionEvent]:
    """The events of a notification; ``ValueError`` if it is not one."""
    _, sep, body = payload.partition(b" ")
    if not sep:
        raise ValueError("not a session notification")
    try:
        wire = [_WireEvent.model_validate(item) for item in json.loads(body)]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed notification: {exc}") from None
    return [parse(w.id, w.event, w.data) for w in wire]


# --- what one client has seen ----------------------------------------------------------


def parse_last_event_id(*candidates: str | None) -> int | None:
    """The first non-empty of ``candidates`` (the ``Last-Event-ID`` header, then the
    ``lastEventId`` query parameter) as an event id; ``None`` when all are empty."""
    for value in candidates:
        if value is None or not value.strip():
            continue
        text = value.strip()
        if not text.isdigit() or int(text) > MAX_EVENT_ID:
            raise InvalidEventId(f"Malformed Last-Event-ID {text[:20]!r}: expected an event id.")
        return int(text)
    return None


class Cursor:
    """The merge of the replay and the live events for one client: each id at most
    once, in id order within a batch, nothing at or below the client's
    ``Last-Event-ID``, nothing after the final event."""

    def __init__(self, last_event_id: int | None = None) -> None:
        self.floor = last_event_id or 0
        self.sent: set[int] = set()
        self.finished = False

    def check(self, session: Session) -> None:
        """Refuse a ``Last-Event-ID`` beyond this session's last event: nothing would
        ever be sent, and the stream would never end."""
        last = final_id(session.progress.total)
        if self.floor > last:
            raise InvalidEventId(
                f"Last-Event-ID {self.floor} is beyond this session's last event ({last})."
            )

    def seen_end(self, session: Session) -> bool:
        """The client already has the final event: a reconnect that gets HTTP 204."""
        return session.is_final and self.floor >= final_id(session.progress.total)

    def fresh(self, events: Iterable[SessionEvent]) -> list[SessionEvent]:
        """The events of ``events`` to send now, marking them sent."""
        out: list[SessionEvent] = []
        for event in sorted(events, key=lambda e: e.id):
            if self.finished:
                break
            if event.id <= self.floor or event.id in self.sent:
                continue
            self.sent.add(event.id)
            out.append(event)
            self.finished = event.is_final
        return out

    @property
    def last_id(self) -> int:
        """The id a client would send back now."""
        return max(self.sent, default=self.floor)
