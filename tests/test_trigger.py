"""Starting a generation: the session in real Redis, the event to a real Inngest endpoint."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import inngest
import pytest
import redis
from helpers import free_port, wait_final

from tripkit import keys, sessions
from tripkit.config import load_settings
from tripkit.constants import EVENT_NAME, FUNCTION_SLUG
from tripkit.devstack.stack import LocalStack
from tripkit.models import BundlesRequested, Preferences, Status
from tripkit.store import SessionStore
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport
from tripkit.trigger import (
    EventSender,
    TriggerError,
    event_for,
    inngest_client,
    request_bundles,
)

PREFS = Preferences(interests=["food", "hiking"], trip_length_days=3, budget=1800, bundle_count=2)


def client_for(tmp_path: Path, inngest_base_url: str) -> inngest.Inngest:
    settings = load_settings(
        tmp_path,
        inngest_base_url=inngest_base_url,
        inngest_signing_key=None,  # dev mode, whatever the environment says
        inngest_event_key=None,
    )
    return inngest_client(settings)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[SessionStore]:
    # A prefix of its own: this test's keys only, without flushing anyone else's.
    async with SessionStore(
        RespTransport(redis_url, timeout=3), ttl=600, prefix=f"trig{uuid.uuid4().hex[:10]}"
    ) as s:
        yield s


def sessions_under(raw: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for key in raw.scan_iter(match=f"{prefix}:session:*", count=100):
        doc = raw.get(key)
        assert doc is not None
        found[key.decode()] = json.loads(doc)
    return found


def runs_of(stack: LocalStack, event_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.inngest_url}/v1/events/{event_id}/runs", timeout=5)
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()["data"]
    return runs


def test_event_for_a_session() -> None:
    session_id = keys.new_session_id()
    session = sessions.new(session_id, PREFS)
    event = event_for(session)
    assert event.name == EVENT_NAME == "trips/bundles.requested"
    assert event.id == session_id
    assert set(event.data) == {"sessionId", "preferences", "createdAt"}
    assert event.data["sessionId"] == session_id
    prefs = event.data["preferences"]
    assert isinstance(prefs, dict)
    assert prefs["tripLengthDays"] == 3
    assert prefs["bundleCount"] == 2
    # The worker reads back exactly what was sent.
    assert BundlesRequested.model_validate(event.data).preferences == PREFS


@pytest.mark.parametrize(
    "prefs",
    [
        PREFS,
        Preferences.model_validate(
            {
                "interests": ["caf\u00e9s", 'a "quoted" one'],
                "startDate": "2027-03-01",
                "endDate": "2027-03-05",
                "budget": 1234.56,
                "currency": "EUR",
                "travellers": 3,
                "bundleCount": 5,
            }
        ),
    ],
)
def test_the_start_event_rebuilds_the_queued_document_byte_for_byte(prefs: Preferences) -> None:
    """The worker writes ``running`` over the queued document it rebuilds from the event
    (no read): the write's check compares bytes, so the rebuild must be exact. Through
    JSON, as Inngest hands the event to the worker."""
    session = sessions.new(keys.new_session_id(), prefs)
    sent = json.loads(json.dumps(event_for(session).data))
    requested = BundlesRequested.model_validate(sent)
    assert requested.created_at is not None
    rebuilt = sessions.new(requested.session_id, requested.preferences, now=requested.created_at)
    assert sessions.encode(rebuilt) == sessions.encode(session)


def test_a_start_event_an_older_tripkit_sent_has_no_created_at() -> None:
    old = {"sessionId": keys.new_session_id(), "preferences": PREFS.model_dump(by_alias=True)}
    assert BundlesRequested.model_validate(old).created_at is None


async def test_a_repeated_idempotent_request_sends_the_same_start_event(
    store: SessionStore,
) -> None:
    """A repeat while the session is queued sends the start event again: the same id and
    the same data (the session as stored), so Inngest keeps one event and one run."""
    key = str(uuid.uuid4())
    first, created = await store.create_once(PREFS, key)
    again, repeated = await store.create_once(PREFS, key)
    assert created and not repeated
    assert event_for(again).id == event_for(first).id == first.session_id
    assert event_for(again).data == event_for(first).data


async def test_inngest_unreachable_fails_the_session(
    store: SessionStore, raw: redis.Redis, tmp_path: Path
) -> None:
    client = client_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TriggerError) as caught:
        await request_bundles(PREFS, store=store, client=client)
    message = str(caught.value)
    assert "Could not queue the generation with Inngest" in message
    assert "INNGEST_EVENT_KEY" in message
    assert "reachable" in message

    found = sessions_under(raw, store.prefix)
    assert len(found) == 1, found  # the session was created, then marked failed
    ((key, doc),) = found.items()
    assert key == store.key(doc["sessionId"])
    assert doc["status"] == Status.FAILED
    assert doc["error"].startswith("Could not queue the generation")
    assert raw.ttl(key) > 0  # still expires like every session
    assert not [d for d in found.values() if d["status"] == Status.QUEUED]


async def test_inngest_reachable_queues_one_run_per_session(
    stack: LocalStack, tmp_path: Path, model_control: object
) -> None:
    # The stack's own Redis, through its REST gateway, under the app's default prefix:
    # the run it starts can then find the session and complete it.
    client = client_for(tmp_path, stack.inngest_url)
    async with SessionStore(RestTransport(stack.rest_url, stack.rest_token), prefix="tripkit") as s:
        session, created = await request_bundles(PREFS, store=s, client=client)
        assert created and session.status == Status.QUEUED
        assert (await s.get(session.session_id)).session_id == session.session_id

    runs = runs_of(stack, session.session_id)
    assert [r["function_id"] for r in runs] == [FUNCTION_SLUG]
    assert runs[0]["event_name"] == EVENT_NAME

    final = wait_final(stack.api_url, session.session_id)
    assert final["status"] == "completed", final
    assert len(final["bundles"]) == 2

    # The same event again (a retried request): deduplicated by id, no second run.
    ids = await client.send(event_for(session))
    assert ids == [runs[0]["event_id"]]
    again = runs_of(stack, session.session_id)
    assert [r["run_id"] for r in again] == [runs[0]["run_id"]]
    assert again[0]["status"] == "Completed"


# --- the app's sender: a burst becomes a few batched requests ----------------------------


def events_named(stack: LocalStack, name: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.inngest_url}/v1/events", params={"name": name, "limit": 1000}, timeout=5
    )
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["data"]
    return events


async def test_a_lone_event_leaves_at_once_in_its_own_request(
    stack: LocalStack, tmp_path: Path
) -> None:
    sender = EventSender(client_for(tmp_path, stack.inngest_url))
    name = f"tripkit/test.lone-{uuid.uuid4().hex[:8]}"  # no function listens: no run starts
    event_id = await sender.send(inngest.Event(name=name, data={"n": 1}))
    assert sender.requests == 1
    (event,) = events_named(stack, name)
    assert event["internal_id"] == event_id and event["data"] == {"n": 1}


async def test_a_burst_of_events_goes_out_in_a_few_batched_requests(
    stack: LocalStack, tmp_path: Path
) -> None:
    sender = EventSender(client_for(tmp_path, stack.inngest_url), in_flight=2, max_batch=20)
    name = f"tripkit/test.burst-{uuid.uuid4().hex[:8]}"
    ids = await asyncio.gather(
        *(sender.send(inngest.Event(name=name, data={"n": n})) for n in range(60))
    )
    assert len(set(ids)) == 60  # every caller got its own event's id
    assert 3 <= sender.requests < 60
    events = events_named(stack, name)
    assert sorted(e["data"]["n"] for e in events) == list(range(60))  # each sent once
    by_id = {e["internal_id"]: e["data"]["n"] for e in events}
    assert [by_id[i] for i in ids] == list(range(60))  # and each id is that event's


async def test_a_failed_batch_fails_every_caller_and_marks_their_sessions_failed(
    store: SessionStore, raw: redis.Redis, tmp_path: Path
) -> None:
    sender = EventSender(client_for(tmp_path, f"http://127.0.0.1:{free_port()}"))
    outcomes = await asyncio.gather(
        *(
            request_bundles(PREFS, store=store, client=sender.client, sender=sender)
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(o, TriggerError) for o in outcomes), outcomes
    found = sessions_under(raw, store.prefix)
    assert len(found) == 5
    assert {d["status"] for d in found.values()} == {Status.FAILED}
