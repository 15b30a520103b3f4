"""The generation end to end on the offline stack: real processes, real HTTP, real Redis.

The app runs `uvicorn tripkit.api:app`; the executor drives the real inngest SDK; the
worker streams through the real openai client from the model server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import inngest
import pytest
import redis
from helpers import ModelControl, wait_final, wait_until

from tripkit import keys
from tripkit.constants import (
    APP_ID,
    CANCEL_EVENT_NAME,
    DEFAULT_KEY_PREFIX,
    EVENT_NAME,
    FUNCTION_SLUG,
)
from tripkit.devstack.stack import LocalStack, StackConfig
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.devstack.trip_planner import make_bundle, plan
from tripkit.llm import ModelClient
from tripkit.models import BundleOutput, Preferences, RunRecord, Session, TokenUsage, utcnow
from tripkit.store import SessionStore
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport
from tripkit.trigger import event_for
from tripkit.worker import (
    BundleJob,
    Worker,
    create_functions,
    deadline_error,
    passed_deadline,
)

PREFS: dict[str, Any] = {
    "interests": ["food", "museums"],
    "tripLengthDays": 4,
    "budget": 3000,
    "currency": "EUR",
    "travellers": 2,
    "bundleCount": 3,
}


def start(stack: LocalStack, prefs: dict[str, Any] = PREFS) -> str:
    response = httpx.post(f"{stack.api_url}/api/generate-bundles", json=prefs, timeout=30)
    assert response.status_code == 202, response.text
    session_id: str = response.json()["sessionId"]
    return session_id


def runs_of(stack: LocalStack, session_id: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{stack.inngest_url}/v1/events/{session_id}/runs", timeout=5).json()
    runs: list[dict[str, Any]] = body["data"]
    return runs


def executions(run: dict[str, Any]) -> int:
    """Inngest bills one execution per run and one per step (the executor's step_count)."""
    return 1 + int(run["step_count"])


def step_attempts(run: dict[str, Any]) -> dict[str, int]:
    return {step["name"]: step["attempts"] for step in run["steps"]}


def run_record(stack: LocalStack, session_id: str) -> tuple[RunRecord, int]:
    key = keys.run_key(DEFAULT_KEY_PREFIX, session_id)
    client = redis.Redis.from_url(stack.redis_url)
    try:
        raw = client.get(key)
        ttl = client.ttl(key)
    finally:
        client.close()
    assert raw is not None, "the worker wrote no run record"
    return RunRecord.model_validate_json(raw), int(ttl)


def test_a_generation_completes_with_every_summary_then_the_bundles(
    stack: LocalStack, model_control: ModelControl
) -> None:
    session_id = start(stack)
    body = wait_final(stack.api_url, session_id)

    assert body["status"] == "completed" and body["error"] is None
    assert [s["index"] for s in body["summaries"]] == [0, 1, 2]
    assert [b["index"] for b in body["bundles"]] == [0, 1, 2]
    assert len({b["destination"] for b in body["bundles"]}) == 3
    for bundle in body["bundles"]:
        assert len(bundle["itinerary"]) == 4 and bundle["estimatedCost"] <= 3000
    assert body["progress"] == {"done": 3, "total": 3}
    assert body["createdAt"] <= body["startedAt"] <= body["firstSummaryAt"] <= body["completedAt"]

    # one model call per bundle, nothing else; nothing generated twice
    assert model_control.stats()["byTask"] == {"bundle": 3}
    assert [model_control.served("bundle", i) for i in range(3)] == [1, 1, 1]

    record, ttl = run_record(stack, session_id)
    assert record.status == "completed" and record.model_calls == record.steps == 3
    assert record.attempts == {"bundle-0": 0, "bundle-1": 0, "bundle-2": 0}
    assert len(record.usage) == 3
    assert len(record.summary_at) == 3 and record.first_summary_at == record.summary_at[0]
    assert record.completed_at is not None  # written just before the session's completion
    assert record.completed_at <= datetime.fromisoformat(body["completedAt"])
    assert all(u.prompt_tokens > 0 and u.completion_tokens > 0 for u in record.usage)
    assert 0 < ttl <= 3600

    (run,) = runs_of(stack, session_id)
    assert run["status"] == "Completed" and run["function_id"] == FUNCTION_SLUG
    # one step per bundle: 1 run + 3 steps = 4 Inngest executions, each step tried once
    assert executions(run) == 4
    assert step_attempts(run) == {"bundle-0": 1, "bundle-1": 1, "bundle-2": 1}
    assert run["output"] == {"sessionId": session_id, "status": "completed", "bundles": 3}


def test_a_generations_writer_side_costs_bundles_plus_five_redis_commands(
    stack: LocalStack, model_control: ModelControl
) -> None:
    """Create (SET NX), running (SET XX; the first step rebuilds the queued session from
    its start event, so it reads nothing), one SET XX per summary, the run record (SET)
    and completed (SET XX): no polls here, the test waits on the executor instead."""
    counter = RedisCommandCounter(stack.redis_url)
    try:
        counter.reset()
        session_id = start(stack)
        assert wait_until(
            lambda: runs_of(stack, session_id)[0]["status"] == "Completed", timeout=60
        )
        counts = counter.counts()
    finally:
        counter.close()
    assert counts.get("SET") == 1 + 1 + 3 + 1 + 1
    assert counts.get("GET", 0) == 0
    assert counts.get("PUBLISH") == 1 + 3 + 1  # each session write is announced


def send_start_event(stack: LocalStack, data: Mapping[str, Any], event_id: str) -> None:
    client = inngest.Inngest(
        app_id=APP_ID,
        is_production=False,
        api_base_url=stack.inngest_url,
        event_api_base_url=stack.inngest_url,
    )
    client.send_sync(inngest.Event(name=EVENT_NAME, data=data, id=event_id))


async def queued_session(stack: LocalStack) -> Session:
    """A session as the API creates it, whose start event is not sent yet."""
    transport = RestTransport(stack.rest_url, stack.rest_token)
    async with SessionStore(transport, prefix=DEFAULT_KEY_PREFIX) as store:
        return await store.create(Preferences.model_validate({**PREFS, "bundleCount": 2}))


def test_a_run_a_session_cancelled_before_it_started_ends_without_writing(
    stack: LocalStack, model_control: ModelControl
) -> None:
    """The first step's write (over the queued document it rebuilt) is refused: the run
    ends at once, the session stays cancelled, no model is asked."""
    session = asyncio.run(queued_session(stack))
    sid = session.session_id
    cancelled = httpx.post(f"{stack.api_url}/api/session/{sid}/cancel", timeout=10)
    assert cancelled.status_code == 202, cancelled.text
    send_start_event(stack, event_for(session).data, sid)
    assert wait_until(
        lambda: bool(runs_of(stack, sid)) and runs_of(stack, sid)[0]["status"] != "Running",
        timeout=60,
    )
    assert httpx.get(f"{stack.api_url}/api/session/{sid}", timeout=5).json() == cancelled.json()
    assert model_control.served("bundle", 0) == 0
    record, _ = run_record(stack, sid)  # on_failure saw the cancel and recorded it
    assert record.status == "cancelled" and record.cancelled_at is not None


def test_a_start_event_without_created_at_reads_the_session_and_completes(
    stack: LocalStack, model_control: ModelControl
) -> None:
    """A run an older tripkit queued: its event has no ``createdAt``, so the first step
    reads the session (one GET) before marking it running."""
    session = asyncio.run(queued_session(stack))
    sid = session.session_id
    old = {
        "sessionId": sid,
        "preferences": session.preferences.model_dump(mode="json", by_alias=True),
    }
    counter = RedisCommandCounter(stack.redis_url)
    try:
        counter.reset()
        send_start_event(stack, old, sid)
        assert wait_until(lambda: runs_of(stack, sid)[0]["status"] == "Completed", timeout=60)
        counts = counter.counts()
    finally:
        counter.close()
    assert counts.get("GET") == 1
    body = httpx.get(f"{stack.api_url}/api/session/{sid}", timeout=5).json()
    assert (
        body["status"] == "completed"
        and body["createdAt"] == session.model_dump(mode="json", by_alias=True)["createdAt"]
    )


def test_model_errors_are_retried_until_the_model_answers(
    stack: LocalStack, model_control: ModelControl
) -> None:
    model_control.fault(status=500, times=2, task="bundle", index=1)
    model_control.fault(status=429, times=1, task="bundle", index=0, retry_after=0)
    session_id = start(stack)
    body = wait_final(stack.api_url, session_id)

    assert body["status"] == "completed"
    assert [s["index"] for s in body["summaries"]] == [0, 1, 2]
    outcomes = model_control.stats()["byOutcome"]
    assert outcomes.get("500") == 2 and outcomes.get("429") == 1
    record, _ = run_record(stack, session_id)
    assert record.attempts == {"bundle-0": 1, "bundle-1": 2, "bundle-2": 0}
    assert record.model_calls == 3 and len(record.usage) == 3  # the calls that answered
    (run,) = runs_of(stack, session_id)
    assert executions(run) == 4  # retried attempts are attempts of the same step
    assert step_attempts(run) == {"bundle-0": 2, "bundle-1": 3, "bundle-2": 1}


def test_a_bundle_cut_after_its_summary_redoes_only_that_bundle(
    stack: LocalStack, model_control: ModelControl
) -> None:
    """Bundle 2's stream breaks once after its summary was written: the retry streams
    bundle 2 again (rewriting summary 2 in place) and nothing before it."""
    model_control.fault(
        cut_after_chunks=100, times=1, task="bundle", index=2
    )  # 600 chars of ~1,200
    session_id = start(stack)
    body = wait_final(stack.api_url, session_id)

    assert body["status"] == "completed"
    assert [s["index"] for s in body["summaries"]] == [0, 1, 2]
    assert [b["index"] for b in body["bundles"]] == [0, 1, 2]
    calls = [(c["task"], c["index"], c["outcome"]) for c in model_control.stats()["calls"]]
    assert calls == [
        ("bundle", 0, "ok"),
        ("bundle", 1, "ok"),
        ("bundle", 2, "cut"),
        ("bundle", 2, "ok"),
    ]
    (run,) = runs_of(stack, session_id)
    assert executions(run) == 4
    assert step_attempts(run) == {"bundle-0": 1, "bundle-1": 1, "bundle-2": 2}
    record, _ = run_record(stack, session_id)
    assert record.attempts["bundle-2"] == 1 and record.model_calls == 3


def test_an_invalid_model_key_fails_the_session_at_once_with_what_to_check(
    stack: LocalStack, model_control: ModelControl
) -> None:
    model_control.fault(status=401, times=-1)
    session_id = start(stack)
    body = wait_final(stack.api_url, session_id)

    assert body["status"] == "failed"
    assert "check OPENAI_API_KEY" in body["error"]
    assert body["bundles"] == []
    assert model_control.stats()["byOutcome"] == {"401": 1}  # not retried
    assert wait_until(lambda: runs_of(stack, session_id)[0]["status"] == "Failed", timeout=10)
    record, _ = run_record(stack, session_id)
    assert record.status == "failed"


def test_a_malformed_model_answer_is_retried(
    stack: LocalStack, model_control: ModelControl
) -> None:
    model_control.fault(cut_after_chunks=3, times=1, task="bundle", index=0, cut_mode="eof")
    session_id = start(stack)
    body = wait_final(stack.api_url, session_id)
    assert body["status"] == "completed"
    assert model_control.stats()["byOutcome"].get("cut") == 1
    assert [model_control.served("bundle", i) for i in range(3)] == [1, 1, 1]


def test_twenty_concurrent_generations_complete_without_cross_talk(
    stack: LocalStack, model_control: ModelControl
) -> None:
    requests = [
        {**PREFS, "tripLengthDays": days, "bundleCount": 1 + days % 3, "currency": currency}
        for days, currency in zip(range(1, 21), ["EUR", "USD", "GBP", "JPY"] * 5, strict=True)
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(lambda p: start(stack, p), requests))
        bodies = list(pool.map(lambda sid: wait_final(stack.api_url, sid, timeout=120), ids))

    assert len(set(ids)) == 20
    for prefs, sid, body in zip(requests, ids, bodies, strict=True):
        assert body["sessionId"] == sid and body["status"] == "completed", body.get("error")
        assert body["preferences"]["tripLengthDays"] == prefs["tripLengthDays"]
        assert len(body["summaries"]) == len(body["bundles"]) == prefs["bundleCount"]
        for bundle in body["bundles"]:
            assert len(bundle["itinerary"]) == prefs["tripLengthDays"]
            assert bundle["currency"] == prefs["currency"]


@pytest.fixture
def slow_stack() -> Iterator[LocalStack]:
    """A stack whose model streams slowly enough to kill the app in the middle of a bundle."""
    config = StackConfig(chunk_delay=0.004, backoff_ms=[50, 100, 200], unreachable_budget=30)
    with LocalStack(config) as running:
        yield running


def test_killing_the_app_mid_bundle_resumes_without_regenerating_finished_bundles(
    slow_stack: LocalStack,
) -> None:
    stack = slow_stack
    control = ModelControl(stack.openai_base_url)
    session_id = start(stack)

    def bundle_one_is_streaming() -> bool:
        body = httpx.get(f"{stack.api_url}/api/session/{session_id}", timeout=5).json()
        return len(body["summaries"]) == 2  # bundle 1 wrote its summary, its bundle streams

    assert wait_until(bundle_one_is_streaming, timeout=60, interval=0.01)
    assert control.served("bundle", 1) == 0, "bundle 1 finished before the kill; slow it down"
    killed = stack.kill_app()  # SIGKILL every worker, in the middle of the bundle-1 step
    stack.wait_app_restarted(len(killed))
    body = wait_final(stack.api_url, session_id, timeout=120)

    assert body["status"] == "completed"
    assert [s["index"] for s in body["summaries"]] == [0, 1, 2]  # each exactly once
    assert [b["index"] for b in body["bundles"]] == [0, 1, 2]
    # the finished bundle 0 was not asked for again; bundle 1 was asked again, once. (The
    # stream the killed worker was reading may still have ended "ok" on the model server:
    # it writes into the dead socket's buffer, so that call may or may not be recorded.)
    calls = Counter(c["index"] for c in control.stats()["calls"] if c["task"] == "bundle")
    assert calls[0] == 1 and calls[2] == 1
    assert 1 <= calls[1] <= 2 and control.served("bundle", 1) >= 1
    assert stack.app_restarts == len(killed)
    (run,) = runs_of(stack, session_id)
    assert run["status"] == "Completed" and run["unreachable_retries"] >= 1
    assert executions(run) == 4


def test_a_missing_model_key_fails_the_session_without_retries() -> None:
    config = StackConfig(chunk_delay=0.0, backoff_ms=[2000], extra_app_env={"OPENAI_API_KEY": ""})
    with LocalStack(config) as stack:
        session_id = start(stack)
        body = wait_final(stack.api_url, session_id)
        assert body["status"] == "failed"
        (run,) = runs_of(stack, session_id)
        assert run["status"] == "Failed" and run["sdk_calls"] == 1  # tried once, not retried
        assert (
            "OPENAI_API_KEY is not set" in body["error"] and "check OPENAI_API_KEY" in body["error"]
        )
        assert ModelControl(stack.openai_base_url).stats()["total"] == 0


def test_runs_beyond_the_concurrency_limit_wait_queued_then_all_complete() -> None:
    """Backpressure: with room for one generation step at a time, the others queue (and
    their sessions say so), the API keeps answering, and nothing is lost."""
    config = StackConfig(
        chunk_delay=0.002,
        backoff_ms=[50, 100],
        workers=1,
        extra_app_env={"TRIPKIT_GENERATION_CONCURRENCY": "1"},
    )
    with LocalStack(config) as stack:
        first, second, third = (start(stack, {**PREFS, "bundleCount": 2}) for _ in range(3))

        def poll(session_id: str) -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(
                f"{stack.api_url}/api/session/{session_id}", timeout=5
            ).json()
            return body

        assert wait_until(lambda: poll(first)["summaries"] != [], timeout=60, interval=0.01)
        assert poll(third)["status"] == "queued"  # it waits for a slot; the API says so
        assert runs_of(stack, third)[0]["queued"] is True

        bodies = [wait_final(stack.api_url, sid, timeout=120) for sid in (first, second, third)]
        assert [b["status"] for b in bodies] == ["completed"] * 3
        assert [len(b["bundles"]) for b in bodies] == [2, 2, 2]
        queues = httpx.get(f"{stack.inngest_url}/_control/queues", timeout=5).json()["data"]
        assert queues[FUNCTION_SLUG]["peak"] == 1
        assert queues[FUNCTION_SLUG]["waiting"] == 0
        functions = httpx.get(f"{stack.inngest_url}/v1/functions", timeout=5).json()["data"]
        (generate,) = [f for f in functions if f["id"] == FUNCTION_SLUG]
        assert generate["concurrency"] == [{"limit": 1, "scope": "fn", "key": None}]


async def test_a_run_an_older_tripkit_started_is_completed_by_its_finalize_step(
    redis_url: str,
) -> None:
    """Runs started before one step per bundle memoized bundle steps that did not complete
    the session; resumed by this version, the run ends with a ``finalize`` step that does."""
    prefs = Preferences.model_validate({**PREFS, "bundleCount": 2})
    store = SessionStore(RespTransport(redis_url, timeout=3), prefix=f"t{uuid.uuid4().hex[:12]}")
    try:
        session = await store.mark_running(await store.create(prefs))
        outputs: list[BundleOutput] = []
        for outline in plan(prefs, 2):
            summary, bundle = make_bundle(prefs, outline.index, outline)
            session = await store.add_summary(session, summary)
            usage = TokenUsage(model="gpt-4o-mini", prompt_tokens=300, completion_tokens=700)
            outputs.append(
                BundleOutput(
                    session=session, bundle=bundle, usage=usage, attempt=0, summary_at=utcnow()
                )
            )
        worker = Worker(store=store, model=lambda: pytest.fail("finalize calls no model"))
        job = BundleJob(session.session_id, 1, outputs[:1], "01OLDRUN", 0)

        result = await worker.finalize(job, outputs[1])

        assert result == {"sessionId": session.session_id, "status": "completed", "bundles": 2}
        done = await store.get(session.session_id)
        assert done.status == "completed" and [b.index for b in done.bundles] == [0, 1]
        record = await store.get_run_record(session.session_id)
        assert record is not None and done.completed_at is not None
        assert record.completed_at is not None and record.completed_at <= done.completed_at
        assert (record.status, record.steps, record.run_id) == ("completed", 2, "01OLDRUN")
    finally:
        await store.aclose()


def test_the_function_declares_its_run_controls_to_inngest() -> None:
    client = inngest.Inngest(app_id="special-trips", is_production=False)

    def no_model() -> ModelClient:
        raise AssertionError("building the config calls no model")

    worker = Worker(store=SessionStore(RespTransport("redis://127.0.0.1:1")), model=no_model)
    generate, stopped = create_functions(client, worker, concurrency=3, deadline=900)
    config = generate.get_config("http://app/api/inngest").main.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert config["concurrency"] == [{"limit": 3}]
    assert config["cancel"] == [
        {"event": CANCEL_EVENT_NAME, "if": "event.data.sessionId == async.data.sessionId"}
    ]
    assert config["timeouts"] == {"finish": "15m"}
    handler = stopped.get_config("http://app/api/inngest").main.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert handler["triggers"] == [
        {
            "event": "inngest/function.cancelled",
            "expression": f"event.data.function_id == '{FUNCTION_SLUG}'",
        }
    ]


def test_a_cancelled_run_is_told_apart_by_how_long_it_ran() -> None:
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert passed_deadline(start, start + timedelta(seconds=600), 600)
    assert passed_deadline(start, start + timedelta(seconds=599.5), 600)  # within the slack
    assert not passed_deadline(start, start + timedelta(seconds=30), 600)
    assert not passed_deadline(None, start, 600)  # never started: cancelled while queued
    assert deadline_error(600) == (
        "Generation stopped: it passed its deadline of 600 s (TRIPKIT_RUN_DEADLINE)."
    )
