from collections.abc import Callable

import pytest

from tripkit import sessions
from tripkit.errors import StoreError
from tripkit.models import Bundle, Preferences, Session, Status, Summary

PREFS = Preferences(interests=["food"], trip_length_days=3, budget=900, bundle_count=3)
SID = "0123456789abcdef0123456789abcdef"


def summary(i: int, text: str = "A trip.") -> Summary:
    return Summary(index=i, title=f"Trip {i}", destination="Lisbon", text=text)


def bundle(i: int) -> Bundle:
    return Bundle(index=i, title=f"Trip {i}", destination="Lisbon", nights=2, estimated_cost=800)


def test_summaries_are_idempotent_and_ordered() -> None:
    s = sessions.new(SID, PREFS)
    s = sessions.add_summary(s, summary(2))
    s = sessions.add_summary(s, summary(0))
    s = sessions.add_summary(s, summary(2, "Retried."))
    assert [x.index for x in s.summaries] == [0, 2]
    assert s.summaries[1].text == "Retried."
    assert s.status is Status.RUNNING and s.progress.done == 2 and s.first_summary_at


def test_index_beyond_requested_bundles_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        sessions.add_summary(sessions.new(SID, PREFS), summary(3))


def test_final_states_are_not_left() -> None:
    done = sessions.complete(sessions.new(SID, PREFS), [bundle(1), bundle(0)])
    assert [b.index for b in done.bundles] == [0, 1] and done.progress.done == 3
    assert sessions.start(done) is done
    with pytest.raises(sessions.SessionClosed):
        sessions.fail(done, "boom")
    failed = sessions.fail(sessions.new(SID, PREFS), "  check OPENAI_API_KEY ")
    assert failed.error == "check OPENAI_API_KEY" and failed.status is Status.FAILED
    with pytest.raises(sessions.SessionClosed):
        sessions.add_summary(failed, summary(0))


def test_encode_decode_round_trip_and_corruption() -> None:
    s = sessions.add_summary(sessions.new(SID, PREFS), summary(0))
    raw = sessions.encode(s)
    assert b'"sessionId"' in raw and sessions.decode(raw) == s
    with pytest.raises(StoreError, match="corrupt"):
        sessions.decode(b'{"sessionId": 1}')


def test_cancel_is_final_keeps_what_was_written_and_repeats() -> None:
    running = sessions.add_summary(sessions.new(SID, PREFS), summary(0))
    cancelled = sessions.cancel(running, "  Stopped by the user. ")
    assert cancelled.status is Status.CANCELLED and cancelled.is_final
    assert cancelled.error == "Stopped by the user." and cancelled.completed_at
    assert [x.index for x in cancelled.summaries] == [0]
    assert sessions.cancel(cancelled, "again") is cancelled
    writes: list[Callable[[], Session]] = [
        lambda: sessions.start(cancelled),
        lambda: sessions.add_summary(cancelled, summary(1)),
        lambda: sessions.complete(cancelled, [bundle(0)]),
        lambda: sessions.fail(cancelled, "boom"),
    ]
    for write in writes:
        with pytest.raises(sessions.SessionClosed, match="already cancelled"):
            write()
    done = sessions.complete(running, [bundle(0)])
    with pytest.raises(sessions.SessionClosed, match="already completed"):
        sessions.cancel(done, "too late")
