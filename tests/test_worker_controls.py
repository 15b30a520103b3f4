"""Run controls end to end on a stack of their own: one generation step at a time
(``TRIPKIT_GENERATION_CONCURRENCY=1``) and a model that streams slowly enough to act
while a run is under way. Real processes: the app, the executor driving the real inngest
SDK, the model server through the real openai client, Redis behind the REST gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from helpers import ModelControl, needs_executor, wait_final, wait_until

from tripkit import keys
from tripkit.constants import DEFAULT_KEY_PREFIX, FUNCTION_SLUG, STOPPED_FUNCTION_ID
from tripkit.devstack.stack import LocalStack, StackConfig
from tripkit.models import RunRecord
from tripkit.worker import deadline_error

PREFS: dict[str, Any] = {
    "interests": ["food"],
    "tripLengthDays": 2,
    "budget": 900,
    "bundleCount": 3,
}


@pytest.fixture(scope="module")
def slow_stack() -> Iterator[LocalStack]:
    config = StackConfig(
        chunk_delay=0.01,
        backoff_ms=[50, 100, 200],
        workers=1,
        extra_app_env={"TRIPKIT_GENERATION_CONCURRENCY": "1"},
    )
    with LocalStack(config) as running:
        yield running


#: Seconds a run may take on the deadline stack: less than a 3-bundle generation there.
DEADLINE = 2


@pytest.fixture(scope="module")
def deadline_stack() -> Iterator[LocalStack]:
    config = StackConfig(
        chunk_delay=0.02,
        backoff_ms=[50, 100, 200],
        workers=1,
        extra_app_env={"TRIPKIT_RUN_DEADLINE": str(DEADLINE)},
    )
    with LocalStack(config) as running:
        yield running


@pytest.fixture
def slow_model(slow_stack: LocalStack) -> Iterator[ModelControl]:
    control = ModelControl(slow_stack.openai_base_url)
    control.reset()
    yield control
    control.reset()


def start(stack: LocalStack, bundles: int = 3) -> str:
    prefs = PREFS | {"bundleCount": bundles}
    response = httpx.post(f"{stack.api_url}/api/generate-bundles", json=prefs, timeout=30)
    assert response.status_code == 202, response.text
    session_id: str = response.json()["sessionId"]
    return session_id


def poll(stack: LocalStack, session_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.api_url}/api/session/{session_id}", timeout=10).json()
    return body


def runs_of(stack: LocalStack, session_id: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{stack.inngest_url}/v1/events/{session_id}/runs", timeout=5).json()
    runs: list[dict[str, Any]] = body["data"]
    return runs


def all_runs(stack: LocalStack) -> list[dict[str, Any]]:
    """Every run the executor holds, of every function (``/v1/events`` and their runs)."""
    events = httpx.get(f"{stack.inngest_url}/v1/events", timeout=5).json()["data"]
    return [run for e in events for run in runs_of(stack, e["internal_id"])]


def stored_record(stack: LocalStack, session_id: str) -> RunRecord | None:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        raw = client.get(keys.run_key(DEFAULT_KEY_PREFIX, session_id))
    finally:
        client.close()
    return RunRecord.model_validate_json(raw) if raw else None


def test_a_generation_waiting_for_the_concurrency_limit_says_queued(
    slow_stack: LocalStack, slow_model: ModelControl
) -> None:
    first = start(slow_stack, bundles=1)
    # Mid-stream in its first bundle: the first run holds the one slot for a while.
    assert wait_until(lambda: len(poll(slow_stack, first)["summaries"]) >= 1, timeout=30)
    second = start(slow_stack, bundles=1)
    time.sleep(0.3)  # time enough for the second run to start, were there a free slot
    assert poll(slow_stack, first)["status"] == "running"
    waiting = poll(slow_stack, second)
    assert waiting["status"] == "queued" and waiting["startedAt"] is None, waiting
    # Inngest limits steps, not runs: the two runs then take turns, one step at a time.
    assert wait_final(slow_stack.api_url, first)["status"] == "completed"
    assert wait_final(slow_stack.api_url, second)["status"] == "completed"


def test_a_cancel_stops_the_run_at_its_next_write_and_nothing_is_written_after(
    slow_stack: LocalStack, slow_model: ModelControl
) -> None:
    session_id = start(slow_stack)
    assert wait_until(lambda: len(poll(slow_stack, session_id)["summaries"]) >= 1, timeout=30)
    response = httpx.post(f"{slow_stack.api_url}/api/session/{session_id}/cancel", timeout=10)
    assert response.status_code == 202, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["bundles"] == []

    assert wait_until(
        lambda: all(r["status"] != "Running" for r in runs_of(slow_stack, session_id)),
        timeout=30,
    )
    assert poll(slow_stack, session_id) == cancelled  # the run wrote nothing after
    # It stopped at the next bundle: the last one was never asked of the model.
    assert slow_model.served("bundle", 2) == 0
    # cancel_on matched the cancel event: Inngest cancelled the run (it did not fail).
    assert [r["status"] for r in runs_of(slow_stack, session_id)] == ["Cancelled"]


@needs_executor("cancel", "timeouts")
def test_inngest_cancels_the_run_and_the_stopped_handler_records_it(
    slow_stack: LocalStack, slow_model: ModelControl
) -> None:
    session_id = start(slow_stack)
    assert wait_until(lambda: len(poll(slow_stack, session_id)["summaries"]) >= 1, timeout=30)
    response = httpx.post(f"{slow_stack.api_url}/api/session/{session_id}/cancel", timeout=10)
    assert response.status_code == 202, response.text
    # cancel_on matched the cancel event: Inngest cancelled the run (it did not fail).
    assert wait_until(
        lambda: [r["status"] for r in runs_of(slow_stack, session_id)] == ["Cancelled"],
        timeout=30,
    ), runs_of(slow_stack, session_id)
    assert wait_until(lambda: stored_record(slow_stack, session_id) is not None, timeout=30)
    record = stored_record(slow_stack, session_id)
    assert record is not None and record.status == "cancelled" and record.cancelled_at
    assert poll(slow_stack, session_id) == response.json()
    assert slow_model.served("bundle", 2) == 0


@needs_executor("cancel", "timeouts")
def test_a_run_past_its_deadline_fails_its_session_with_the_cause(
    deadline_stack: LocalStack,
) -> None:
    session_id = start(deadline_stack)
    body = wait_final(deadline_stack.api_url, session_id, timeout=60)
    assert body["status"] == "failed", body
    assert body["error"] == deadline_error(DEADLINE)
    assert len(body["summaries"]) < 3 and body["bundles"] == []
    runs = runs_of(deadline_stack, session_id)
    assert [r["status"] for r in runs] == ["Cancelled"], runs
    # The executor emitted inngest/function.cancelled, and the stopped handler ran once.
    handled = [
        r for r in all_runs(deadline_stack) if r["function_id"].endswith(STOPPED_FUNCTION_ID)
    ]
    assert [r["status"] for r in handled] == ["Completed"], handled
    record = stored_record(deadline_stack, session_id)
    assert record is not None and record.status == "failed" and record.failed_at
    assert all(r["function_id"] != f"{FUNCTION_SLUG}-failure" for r in all_runs(deadline_stack))
