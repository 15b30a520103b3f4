"""The push events, pure: derivation from the document, announcements, the merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tripkit import events, sessions
from tripkit.events import Cursor, FinalData, InvalidEventId, SessionEvent, StatusData
from tripkit.models import Bundle, Preferences, Session, Status, Summary

PREFS = Preferences(interests=["food"], trip_length_days=3, budget=900, bundle_count=3)
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def summary(i: int) -> Summary:
    return Summary(index=i, title=f"Trip {i}", destination="Porto", text="Three slow days.")


def bundle(i: int) -> Bundle:
    return Bundle(index=i, title=f"Trip {i}", destination="Porto", nights=2, estimated_cost=800)


def history() -> list[Session]:
    """A 3-bundle session after each of its writes."""
    s = sessions.new("a" * 32, PREFS, now=T0)
    states = [s]
    s = sessions.start(s, now=T0 + timedelta(seconds=1))
    states.append(s)
    for i in range(3):
        s = sessions.add_summary(s, summary(i), now=T0 + timedelta(seconds=10 * (i + 1)))
        states.append(s)
    states.append(sessions.complete(s, [bundle(i) for i in range(3)], now=T0 + timedelta(40)))
    return states


def ids(batch: list[SessionEvent]) -> list[int]:
    return [e.id for e in batch]


def test_ids_are_slots_in_the_history_so_every_replay_yields_the_same() -> None:
    states = history()
    final = events.derive(states[-1])
    assert [(e.id, e.event) for e in final] == [
        (1, "status"),
        (2, "status"),
        (3, "summary"),
        (4, "summary"),
        (5, "summary"),
        (6, "completed"),
    ]
    # Each earlier state's events are a prefix of the final ones, equal field by field.
    for state in states:
        derived = events.derive(state)
        assert derived == final[: len(derived)]
    assert isinstance(final[-1].data, FinalData)
    assert [b.index for b in final[-1].data.bundles] == [0, 1, 2]
    assert final[-1].is_final and not final[2].is_final


def test_progress_of_a_summary_is_as_it_was_when_it_landed() -> None:
    done = [e.data.progress.done for e in events.derive(history()[-1]) if e.event == "summary"]  # type: ignore[union-attr]
    assert done == [1, 2, 3]


def test_the_final_event_is_named_after_the_final_status() -> None:
    queued = sessions.new("b" * 32, PREFS, now=T0)
    failed = sessions.fail(queued, "the model key was rejected", now=T0)
    derived = events.derive(failed)
    # Never started: no running event; the final slot is the same as for completed.
    assert [(e.id, e.event) for e in derived] == [(1, "status"), (6, "failed")]
    data = derived[-1].data
    assert isinstance(data, FinalData)
    assert data.status is Status.FAILED and data.error == "the model key was rejected"


def test_a_write_announces_what_it_added_and_always_the_status_and_final_events() -> None:
    states = history()
    assert ids(events.announced(states[0], states[1])) == [1, 2]
    assert ids(events.announced(states[2], states[3])) == [1, 2, 4]
    assert ids(events.announced(states[4], states[5])) == [1, 2, 6]
    # Without what the writer saw, everything is announced.
    assert ids(events.announced(None, states[3])) == [1, 2, 3, 4]
    # A write repeated after a failed PUBLISH, from the already changed document.
    assert ids(events.announced(states[5], states[5])) == [1, 2, 6]


def test_a_notification_round_trips_and_names_its_session_first() -> None:
    batch = events.derive(history()[-1])
    payload = events.encode_notification("c" * 32, batch)
    assert payload.startswith(b"c" * 32 + b" ")
    assert events.notification_session(payload) == "c" * 32
    assert events.decode_notification(payload) == batch


@pytest.mark.parametrize(
    "payload", [b"", b"nospace", b"id not-json", b'id [{"id": 0, "event": "x", "data": {}}]']
)
def test_a_malformed_notification_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        events.decode_notification(payload)


def test_an_unknown_event_name_reads_as_a_final_event() -> None:
    """A newer server's final status (say ``cancelled``) still ends an older client."""
    data = {"status": "failed", "progress": {"done": 0, "total": 3}, "error": "stopped"}
    event = events.parse(6, "cancelled", data | {"reason": "a field this client lacks"})
    assert event.is_final


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [(None, None, None), ("", "", None), (" 4 ", None, 4), ("4", "2", 4), (None, "2", 2)],
)
def test_last_event_id_the_header_wins_over_the_query(
    header: str | None, query: str | None, expected: int | None
) -> None:
    assert events.parse_last_event_id(header, query) == expected


@pytest.mark.parametrize("bad", ["x", "-1", "1.5", "9" * 12])
def test_a_malformed_last_event_id_is_refused(bad: str) -> None:
    with pytest.raises(InvalidEventId, match="Malformed Last-Event-ID"):
        events.parse_last_event_id(bad)


def test_cursor_sends_each_id_once_in_order_and_nothing_after_the_final() -> None:
    final = events.derive(history()[-1])
    cursor = Cursor(last_event_id=2)
    assert ids(cursor.fresh(final[:4])) == [3, 4]
    assert ids(cursor.fresh(final[:4])) == []
    assert ids(cursor.fresh(reversed(final))) == [5, 6]
    assert cursor.finished and cursor.last_id == 6
    late = SessionEvent(7, "status", StatusData(status=Status.RUNNING, at=T0))
    assert cursor.fresh([late]) == []


def test_the_race_an_announcement_between_the_read_and_the_live_stream_is_kept_once() -> None:
    """Subscribe, then read: a write landing in between is both in the buffered
    announcements and (if it landed before the read) in the document. Either way the
    client gets it exactly once; with only the buffer, it still gets it."""
    states = history()
    # The write of summary 1 landed after the subscription, before the read.
    buffered = [events.announced(states[2], states[3])]
    document = states[3]
    cursor = Cursor()
    sent = ids(cursor.fresh(events.derive(document)))
    for batch in buffered:
        sent += ids(cursor.fresh(batch))
    assert sent == [1, 2, 3, 4]
    # The same write landing after the read: only the buffer has it.
    cursor = Cursor()
    sent = ids(cursor.fresh(events.derive(states[2])))
    for batch in buffered:
        sent += ids(cursor.fresh(batch))
    assert sent == [1, 2, 3, 4]


def test_cursor_knows_a_client_that_already_has_the_end() -> None:
    states = history()
    assert Cursor(6).seen_end(states[-1])
    assert not Cursor(5).seen_end(states[-1])
    assert not Cursor(6).seen_end(states[3])  # not final yet: wait for it
    Cursor(6).check(states[3])
    with pytest.raises(InvalidEventId, match="beyond this session's last event"):
        Cursor(7).check(states[3])


def test_a_client_folding_the_events_holds_the_document_poll_mode_shows() -> None:
    states = history()
    # from the first document a client reads, fold each later state's new events
    held, seen = states[0], {e.id for e in events.derive(states[0])}
    for state in states[1:]:
        for event in events.derive(state):
            if event.id not in seen:
                seen.add(event.id)
                held = events.apply(held, event)
        skip = {"updated_at", "first_summary_at"}  # worker times no event carries
        assert held.model_dump(exclude=skip) == state.model_dump(exclude=skip)
    # a repeated event changes nothing, nor does anything after the final one
    again = events.derive(states[-1])
    assert events.apply(held, again[2]) == held and events.apply(held, again[1]) == held


def test_a_failed_final_event_folds_to_the_failed_document() -> None:
    running = sessions.add_summary(sessions.start(sessions.new("b" * 32, PREFS)), summary(0))
    failed = sessions.fail(running, "The model refused: check OPENAI_API_KEY.")
    held = events.apply(running, events.derive(failed)[-1])
    assert held.status is Status.FAILED and held.error == failed.error
    assert held.completed_at == failed.completed_at and held.summaries == running.summaries
