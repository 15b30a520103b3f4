"""The session store against a real Redis, over both transports, same expectations."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis

from tripkit import events, keys, sessions
from tripkit.devstack.redis_server import EmbeddedRedis
from tripkit.devstack.rest_gateway import BackgroundGateway
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.errors import (
    IdempotencyKeyReused,
    InvalidSessionId,
    RedisTimeout,
    RedisUnavailable,
    SessionNotFound,
)
from tripkit.models import Bundle, Preferences, RunRecord, Session, Status, Summary
from tripkit.sessions import SessionClosed
from tripkit.store import SessionStore
from tripkit.transport import Transport
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport

TTL = 600
PREFS = Preferences(interests=["food", "museums"], trip_length_days=4, budget=3000, bundle_count=3)


def summary(i: int, text: str = "Four slow days.") -> Summary:
    return Summary(index=i, title=f"Trip {i}", destination="Porto", text=text)


def bundle(i: int) -> Bundle:
    return Bundle(index=i, title=f"Trip {i}", destination="Porto", nights=3, estimated_cost=2500)


@pytest.fixture(params=["resp", "rest"])
async def transport(
    request: pytest.FixtureRequest, redis_url: str, rest_gateway: BackgroundGateway
) -> AsyncIterator[Transport]:
    t: Transport
    if request.param == "resp":
        t = RespTransport(redis_url, timeout=3)
    else:
        t = RestTransport(rest_gateway.url, rest_gateway.token, timeout=3)
    yield t
    await t.aclose()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """Direct access to inspect what the store left in Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def store(transport: Transport) -> SessionStore:
    # A prefix of its own keeps each test's keys apart without flushing the database.
    return SessionStore(transport, ttl=TTL, prefix=f"t{uuid.uuid4().hex[:12]}")


def count(store: SessionStore) -> dict[str, int]:
    return dict(store.transport.counter.by_name)


async def test_full_lifecycle(store: SessionStore) -> None:
    created = await store.create(PREFS)
    sid = created.session_id
    polled = await store.get(sid)
    assert polled.status is Status.QUEUED and polled.preferences == PREFS
    s = await store.mark_running(polled)
    for i in range(3):
        s = await store.add_summary(s, summary(i))
        seen = await store.get(sid)
        assert [x.index for x in seen.summaries] == list(range(i + 1))
        assert seen.progress.done == i + 1
    s = await store.complete(s, [bundle(2), bundle(0), bundle(1)])
    final = await store.get(sid)
    assert final.status is Status.COMPLETED and final == s
    assert [b.index for b in final.bundles] == [0, 1, 2]
    assert final.started_at and final.first_summary_at and final.completed_at


async def test_every_key_has_a_ttl_within_the_configured_one(
    store: SessionStore, raw: redis.Redis
) -> None:
    for _ in range(3):
        s = await store.create(PREFS)
        s = await store.add_summary(await store.mark_running(s), summary(0))
        await store.complete(s, [bundle(0)])
    failed = await store.create(PREFS)
    await store.fail(failed.session_id, "model said no")
    await store.put_run_record(RunRecord(session_id=failed.session_id, status=Status.FAILED))
    record = await store.get_run_record(failed.session_id)
    assert record is not None and record.status is Status.FAILED
    found = list(raw.scan_iter(match=keys.pattern(store.prefix)))
    assert len(found) == 5  # 4 sessions and a run record
    for key in found:
        ttl = raw.ttl(key)
        assert 0 < ttl <= TTL, (key, ttl)


async def test_summary_writes_are_idempotent(store: SessionStore) -> None:
    s = await store.mark_running(await store.create(PREFS))
    s1 = await store.add_summary(s, summary(2))
    # A retried step writes the same summary again from the state it started with.
    await store.add_summary(s, summary(2))
    await store.add_summary(s1, summary(2, "second attempt"))
    got = await store.get(s.session_id)
    assert [x.index for x in got.summaries] == [2]
    assert got.summaries[0].text == "second attempt"


async def test_each_operation_costs_one_command_and_each_write_one_publish(
    store: SessionStore,
) -> None:
    s = await store.create(PREFS)
    assert count(store) == {"SET": 1}
    store.transport.counter.reset()
    await store.get(s.session_id)
    assert count(store) == {"GET": 1}
    store.transport.counter.reset()
    s = await store.mark_running(s)
    assert count(store) == {"EVAL": 1, "PUBLISH": 1}
    store.transport.counter.reset()
    s = await store.add_summary(s, summary(0))
    assert count(store) == {"EVAL": 1, "PUBLISH": 1}
    store.transport.counter.reset()
    s = await store.complete(s, [bundle(0)])
    assert count(store) == {"EVAL": 1, "PUBLISH": 1}
    other = await store.create(PREFS)
    store.transport.counter.reset()
    await store.fail(other, "boom")
    assert count(store) == {"EVAL": 1, "PUBLISH": 1}
    third = await store.create(PREFS)
    store.transport.counter.reset()
    await store.fail(third.session_id, "boom")  # an on_failure handler knows only the id
    assert count(store) == {"GET": 1, "EVAL": 1, "PUBLISH": 1}
    fourth = await store.create(PREFS)
    store.transport.counter.reset()
    await store.cancel(fourth.session_id, "stop")
    assert count(store) == {"GET": 1, "EVAL": 1, "PUBLISH": 1}


async def test_each_write_announces_what_it_added(store: SessionStore, redis_url: str) -> None:
    listener = redis.Redis.from_url(redis_url).pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe(keys.events_channel(store.prefix))
    confirmed = listener.get_message(timeout=2)
    assert confirmed is not None and confirmed["type"] == "subscribe"

    def announced() -> tuple[str, list[tuple[int, str]]]:
        message = listener.get_message(timeout=2)
        assert message is not None and message["type"] == "message", message
        payload: bytes = message["data"]
        got = events.decode_notification(payload)
        return events.notification_session(payload), [(e.id, e.event) for e in got]

    s = await store.create(PREFS)  # nobody can follow an id not yet handed out: silent
    s = await store.mark_running(s)
    assert announced() == (s.session_id, [(1, "status"), (2, "status")])
    s = await store.add_summary(s, summary(0))
    # The status events every time (small); of the summaries only the new one.
    assert announced() == (s.session_id, [(1, "status"), (2, "status"), (3, "summary")])
    s = await store.add_summary(s, summary(1))
    assert announced()[1] == [(1, "status"), (2, "status"), (4, "summary")]
    s = await store.complete(s, [bundle(0), bundle(1)])
    assert announced()[1] == [(1, "status"), (2, "status"), (6, "completed")]
    # Failing, knowing only the id, still announces the final event.
    other = await store.create(PREFS)
    await store.fail(other.session_id, "boom")
    assert announced() == (other.session_id, [(1, "status"), (6, "failed")])
    # A cancel announces its final event; a write it refuses announces nothing.
    third = await store.mark_running(await store.create(PREFS))
    assert announced()[1] == [(1, "status"), (2, "status")]
    await store.cancel(third.session_id, "stop")
    assert announced() == (third.session_id, [(1, "status"), (2, "status"), (6, "cancelled")])
    with pytest.raises(SessionClosed):
        await store.add_summary(third, summary(0))
    assert listener.get_message(timeout=0.2) is None
    listener.close()


async def test_what_redis_bills_per_write_is_the_script_and_its_set(
    store: SessionStore, redis_url: str
) -> None:
    s = await store.create(PREFS)
    counter = RedisCommandCounter(redis_url)
    try:
        counter.reset()
        s = await store.add_summary(await store.mark_running(s), summary(0))
        assert counter.counts() == {"EVAL": 2, "SET": 2, "PUBLISH": 2}  # Upstash bills 6
        await store.cancel(s.session_id, "stop")
        counter.reset()
        with pytest.raises(SessionClosed):
            await store.add_summary(s, summary(1))
        assert counter.counts() == {"EVAL": 1, "SET": 2}  # refused: swapped back, silent
    finally:
        counter.close()


async def test_a_cancelled_session_refuses_every_later_write_of_the_run(
    store: SessionStore, raw: redis.Redis
) -> None:
    s = await store.add_summary(await store.mark_running(await store.create(PREFS)), summary(0))
    cancelled, changed = await store.cancel(s.session_id, "Stopped by the user.")
    assert changed and cancelled.status is Status.CANCELLED
    assert cancelled.error == "Stopped by the user." and cancelled.completed_at
    stored = raw.get(store.key(s.session_id))

    writes: list[Callable[[], Awaitable[Session]]] = [
        lambda: store.add_summary(s, summary(1)),
        lambda: store.mark_running(s),
        lambda: store.complete(s, [bundle(0)]),
    ]
    for write in writes:
        with pytest.raises(SessionClosed) as closed:
            await write()
        assert closed.value.session.status is Status.CANCELLED
    assert await store.fail(s.session_id, "boom") == cancelled  # kept, not overwritten
    assert raw.get(store.key(s.session_id)) == stored
    assert 0 < raw.ttl(store.key(s.session_id)) <= TTL

    again, changed = await store.cancel(s.session_id, "twice")
    assert not changed and again == cancelled


def rebuilt(session: Session) -> Session:
    """The queued session as the worker rebuilds it from its start event (no read)."""
    return sessions.new(session.session_id, session.preferences, now=session.created_at)


async def test_the_run_marks_running_from_the_rebuilt_queued_document_without_a_read(
    store: SessionStore, raw: redis.Redis
) -> None:
    created = await store.create(PREFS)
    store.transport.counter.reset()
    running = await store.mark_running(rebuilt(created))
    assert count(store) == {"EVAL": 1, "PUBLISH": 1}
    assert running.status is Status.RUNNING and running.created_at == created.created_at
    assert raw.get(store.key(created.session_id)) == sessions.encode(running)


async def test_a_retried_first_step_goes_on_from_what_it_wrote_before(
    store: SessionStore, raw: redis.Redis
) -> None:
    created = await store.create(PREFS)
    first = await store.add_summary(await store.mark_running(rebuilt(created)), summary(0))
    stored = raw.get(store.key(created.session_id))
    # The retry rebuilds the queued document again: the script keeps what is stored.
    again = await store.mark_running(rebuilt(created))
    assert again == first and [x.index for x in again.summaries] == [0]
    assert raw.get(store.key(created.session_id)) == stored


async def test_a_session_cancelled_or_gone_before_its_run_started_refuses_the_start(
    store: SessionStore, raw: redis.Redis
) -> None:
    created = await store.create(PREFS)
    cancelled, _ = await store.cancel(created.session_id, "Stopped before it started.")
    stored = raw.get(store.key(created.session_id))
    with pytest.raises(SessionClosed) as closed:
        await store.mark_running(rebuilt(created))
    assert closed.value.session == cancelled
    assert raw.get(store.key(created.session_id)) == stored
    gone = await store.create(PREFS)
    raw.delete(store.key(gone.session_id))  # as if its TTL ran out
    with pytest.raises(SessionNotFound, match="no longer exists"):
        await store.mark_running(rebuilt(gone))
    assert raw.exists(store.key(gone.session_id)) == 0


async def test_a_finished_session_is_not_cancelled(store: SessionStore) -> None:
    done = await store.complete(await store.create(PREFS), [bundle(0)])
    same, changed = await store.cancel(done.session_id, "too late")
    assert not changed and same == done
    failed = await store.fail((await store.create(PREFS)).session_id, "model said no")
    same, changed = await store.cancel(failed.session_id, "too late")
    assert not changed and same.status is Status.FAILED
    with pytest.raises(SessionNotFound):
        await store.cancel(keys.new_session_id(), "nothing there")


async def test_a_retried_final_write_repeats_but_never_changes_the_final_status(
    store: SessionStore,
) -> None:
    s = await store.mark_running(await store.create(PREFS))
    await store.complete(s, [bundle(0)])
    again = await store.complete(s, [bundle(0)])  # the finalize step, retried
    assert (await store.get(s.session_id)) == again
    with pytest.raises(SessionClosed):
        await store.add_summary(s, summary(1))
    assert (await store.get(s.session_id)).status is Status.COMPLETED


async def test_a_cancel_keeps_a_summary_written_after_it_read_the_session(
    store: SessionStore, raw: redis.Redis
) -> None:
    s = await store.mark_running(await store.create(PREFS))
    read = raw.get(store.key(s.session_id))
    assert isinstance(read, bytes)
    s = await store.add_summary(s, summary(0))  # the run writes between read and write
    stale = sessions.cancel(sessions.decode(read), "late")
    kept = await store._write(stale, expected=read)
    assert kept is not None and sessions.decode(kept) == s  # refused: it changed
    cancelled, changed = await store.cancel(s.session_id, "stop")
    assert changed and [x.index for x in cancelled.summaries] == [0]


async def test_idempotency_key_gives_one_session_per_key(
    store: SessionStore, raw: redis.Redis
) -> None:
    first, created = await store.create_once(PREFS, "click-1")
    assert created and first.status is Status.QUEUED
    store.transport.counter.reset()
    again, created = await store.create_once(PREFS, "click-1")
    assert not created and again == first
    assert count(store) == {"EVAL": 1, "GET": 1}
    other, created = await store.create_once(PREFS, "click-2")
    assert created and other.session_id != first.session_id
    with pytest.raises(IdempotencyKeyReused, match=first.session_id):
        await store.create_once(PREFS.model_copy(update={"budget": 10.0}), "click-1")
    idem = keys.idempotency_key(store.prefix, "click-1")
    assert 0 < raw.ttl(idem) <= TTL
    assert len(list(raw.scan_iter(match=keys.pattern(store.prefix)))) == 4  # 2 + 2 keys


async def test_a_burst_with_one_idempotency_key_creates_one_session(
    store: SessionStore, raw: redis.Redis
) -> None:
    results = await asyncio.gather(*(store.create_once(PREFS, "burst") for _ in range(10)))
    assert len({s.session_id for s, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    found = list(raw.scan_iter(match=f"{store.prefix}:session:*"))
    assert len(found) == 1


async def test_a_write_never_resurrects_a_session(store: SessionStore, raw: redis.Redis) -> None:
    s = await store.create(PREFS)
    raw.delete(store.key(s.session_id))  # as if its TTL ran out
    with pytest.raises(SessionNotFound, match="no longer exists"):
        await store.add_summary(s, summary(0))
    with pytest.raises(SessionNotFound):
        await store.complete(s, [bundle(0)])
    assert raw.exists(store.key(s.session_id)) == 0
    with pytest.raises(SessionNotFound, match="Upstash Redis credentials"):
        await store.get(s.session_id)


async def test_ttl_is_refreshed_on_write(store: SessionStore, raw: redis.Redis) -> None:
    s = await store.create(PREFS)
    key = store.key(s.session_id)
    raw.expire(key, 5)
    await store.mark_running(s)
    assert raw.ttl(key) > TTL - 10


@pytest.mark.parametrize("bad", ["*", "../x", "a" * 5000, "tripkit:session:*", "ABCDEF" * 6])
async def test_bad_session_ids_never_reach_redis(store: SessionStore, bad: str) -> None:
    with pytest.raises(InvalidSessionId):
        await store.get(bad)
    with pytest.raises(InvalidSessionId):
        await store.fail(bad, "x")
    assert store.transport.counter.total == 0


@pytest.mark.parametrize("kind", ["resp", "rest"])
async def test_redis_stopped_mid_test_gives_a_typed_error_without_hanging(kind: str) -> None:
    timeout = 1.0
    with EmbeddedRedis() as server, BackgroundGateway(server.url, "gw-token") as gateway:
        t: Transport = (
            RespTransport(server.url, timeout=timeout)
            if kind == "resp"
            else RestTransport(gateway.url, gateway.token, timeout=timeout)
        )
        store = SessionStore(t, ttl=TTL)
        s = await store.create(PREFS)
        server.stop()
        operations: list[Callable[[], Awaitable[Session]]] = [
            lambda: store.get(s.session_id),
            lambda: store.add_summary(s, summary(0)),
        ]
        for operation in operations:
            started = time.monotonic()
            with pytest.raises((RedisUnavailable, RedisTimeout)) as info:
                await operation()
            # two attempts at most (reads and idempotent writes retry once), each bounded
            assert time.monotonic() - started < 2 * timeout + 1
            assert "paused" in str(info.value) or "in time" in str(info.value)
        await t.aclose()
