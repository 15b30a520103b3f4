"""The local executor against the REAL inngest SDK, over real HTTP both ways, no mocks.

A sample FastAPI app (executor_sample_app.py) and the executor each run under uvicorn in
a thread on their own port. Events go in through the SDK's ``client.send``; the tests
then poll the executor's REST routes, as tripkit's tooling will.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import fastapi
import httpx
import inngest
import inngest.fast_api
import pytest
from helpers import ServerThread, free_port

from tripkit import signing
from tripkit.devstack.executor import Engine, ExecutorConfig, create_app
from tripkit.devstack.executor.calls import parse_when
from tripkit.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

KEY = "signkey-test-" + "ab12" * 16
WRONG_KEY = "signkey-test-" + "cd34" * 16
EVENT_KEY = "test-event-key"


def _load_sample() -> ModuleType:
    path = Path(__file__).with_name("executor_sample_app.py")
    spec = importlib.util.spec_from_file_location("_executor_sample_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sample = _load_sample()


@dataclass
class Stack:
    executor: ServerThread
    app: ServerThread
    rec: Any
    base: str

    @property
    def serve_url(self) -> str:
        return f"{self.app.url}/api/inngest"


def fast_config(port: int, **overrides: Any) -> ExecutorConfig:
    settings: dict[str, Any] = {
        "port": port,
        "backoff": (0.05, 0.1),
        "jitter": 0.0,
        "request_timeout": 10.0,
        "unreachable_budget": 15.0,
        "unreachable_backoff": (0.05, 0.1, 0.2),
    }
    settings.update(overrides)
    return ExecutorConfig(**settings)


def start_stack(config_overrides: dict[str, Any] | None = None, **app_kwargs: Any) -> Stack:
    port = free_port()
    executor = ServerThread(create_app(fast_config(port, **(config_overrides or {}))), port)
    executor.start()
    app, _client, rec = sample.build_app(api_base_url=executor.url, **app_kwargs)
    app_server = ServerThread(app, free_port()).start()
    return Stack(executor, app_server, rec, executor.url)


def sync(stack: Stack) -> httpx.Response:
    return httpx.post(f"{stack.base}/_control/sync", json={"url": stack.serve_url}, timeout=30)


@pytest.fixture(scope="module")
def dev() -> Iterator[Stack]:
    stack = start_stack()
    answer = sync(stack)
    assert answer.status_code == 200, answer.text
    yield stack
    stack.app.stop()
    stack.executor.stop()


@pytest.fixture(scope="module")
def signed() -> Iterator[Stack]:
    stack = start_stack({"signing_key": KEY, "event_key": EVENT_KEY}, signing_key=KEY)
    answer = sync(stack)
    assert answer.status_code == 200, answer.text
    yield stack
    stack.app.stop()
    stack.executor.stop()


async def send(
    base: str, name: str, data: dict[str, Any] | None = None, event_id: str = "", **kw: Any
) -> str:
    """Send with the REAL SDK client, as tripkit's trigger will."""
    sender = inngest.Inngest(
        app_id="exec-test-sender",
        is_production=kw.get("event_key") is not None,
        event_key=kw.get("event_key"),
        event_api_base_url=base,
        api_base_url=base,
    )
    ids = await sender.send(inngest.Event(name=name, data=data or {}, id=event_id))
    assert len(ids) == 1
    return ids[0]


async def wait_runs(
    base: str, event_id: str, count: int = 1, timeout: float = 15.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            runs: list[dict[str, Any]] = (
                await http.get(f"{base}/v1/events/{event_id}/runs")
            ).json()["data"]
            if len(runs) >= count and all(r["status"] != "Running" for r in runs):
                return runs
            assert time.monotonic() < deadline, f"runs still going: {json.dumps(runs)[:2000]}"
            await asyncio.sleep(0.03)


async def wait_runs_started(base: str, event_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The event's run as soon as the executor has one (finished or not)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            runs = (await http.get(f"{base}/v1/events/{event_id}/runs")).json()["data"]
            if runs:
                found: dict[str, Any] = runs[0]
                return found
            assert time.monotonic() < deadline, "no run started"
            await asyncio.sleep(0.01)


async def run_one(
    base: str, name: str, data: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    event_id = await send(base, name, data, **kw)
    runs = await wait_runs(base, event_id)
    assert len(runs) == 1, runs
    return runs[0]


# ------------------------------------------------------------------ basics and sync


def test_health_and_registered_functions(dev: Stack) -> None:
    assert httpx.get(f"{dev.base}/health").json() == {"status": 200, "message": "OK"}
    body = httpx.get(f"{dev.base}/v1/functions").json()
    assert set(body) == {"data", "metadata"}
    fns = {f["id"]: f for f in body["data"]}
    assert fns["exec-test-seq"]["max_attempts"] == 5  # SDK default: 4 retries
    assert fns["exec-test-flaky"]["max_attempts"] == 4
    assert fns["exec-test-doomed"]["max_attempts"] == 1
    failure = fns["exec-test-doomed-failure"]
    assert failure["max_attempts"] == 1
    assert failure["triggers"] == [
        {
            "event": "inngest/function.failed",
            "expression": "event.data.function_id == 'exec-test-doomed'",
        }
    ]
    assert fns["exec-test-seq"]["url"].startswith(dev.serve_url + "?fnId=exec-test-seq")


def test_sync_reports_what_registered(dev: Stack) -> None:
    answer = sync(dev)
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] is True and body["app_id"] == "exec-test" and body["modified"] is False
    assert "exec-test-seq" in body["functions"] and body["url"] == dev.serve_url


def test_sync_failures_are_reported() -> None:
    port = free_port()
    executor = ServerThread(create_app(fast_config(port)), port).start()
    try:
        bad = httpx.post(f"{executor.url}/_control/sync", json={"nope": 1})
        assert bad.status_code == 400 and bad.json()["ok"] is False
        nobody = f"http://127.0.0.1:{free_port()}/api/inngest"
        down = httpx.post(f"{executor.url}/_control/sync", json={"url": nobody})
        assert down.status_code == 502 and "could not reach" in down.json()["error"]
        # An app whose SDK registers with another server: the PUT says ok, we say no.
        app, _, _ = sample.build_app(api_base_url=f"http://127.0.0.1:{free_port()}")
        elsewhere = ServerThread(app, free_port()).start()
        try:
            answer = httpx.post(
                f"{executor.url}/_control/sync", json={"url": f"{elsewhere.url}/api/inngest"}
            )
            assert answer.status_code == 502 and answer.json()["ok"] is False
        finally:
            elsewhere.stop()
    finally:
        executor.stop()


def test_register_validates_bodies(dev: Stack) -> None:
    url = f"{dev.base}/fn/register"
    fn = {
        "id": "other-x",
        "name": "x",
        "triggers": [{"event": "other/x"}],
        "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": ""}}},
    }
    cases: list[Any] = [
        [],
        {"appname": "other", "url": "http://127.0.0.1:1/api", "functions": []},
        {"appname": "other", "url": "http://127.0.0.1:1/api", "functions": [fn]},
        {
            "appname": "other",
            "url": "http://127.0.0.1:1/api",
            "functions": [
                {
                    **fn,
                    "steps": {"step": {"runtime": {"url": "http://127.0.0.1:1/api?fnId=other-x"}}},
                    "triggers": [{"event": "other/x", "expression": "event.data.n >"}],
                }
            ],
        },
    ]
    for case in cases:
        answer = httpx.post(url, json=case)
        assert answer.status_code == 400, case
        assert isinstance(answer.json()["error"], str)
    assert httpx.post(url, content=b"{not json").status_code == 400


async def test_event_api_validation(dev: Stack) -> None:
    async with httpx.AsyncClient(base_url=dev.base) as http:
        for body in (
            b"nope",
            b'{"data": {}}',
            b'{"name": "inngest/function.failed", "data": {}}',
            b'{"name": "x/y", "data": [1]}',
            b'[{"name": "x/y"}, {"name": ""}]',
            b'{"name": "x/y", "ts": "yesterday"}',
        ):
            answer = await http.post("/e/NO_EVENT_KEY_SET", content=body)
            assert answer.status_code == 400, body
            assert "error" in answer.json()
        ok = await http.post(
            "/e/anything", json=[{"name": "x/unrouted", "data": {}}, {"name": "x/unrouted"}]
        )
        assert ok.status_code == 200
        assert ok.json()["status"] == 200 and len(ok.json()["ids"]) == 2
        listed = (await http.get("/v1/events", params={"name": "x/unrouted"})).json()["data"]
        assert {e["internal_id"] for e in listed} >= set(ok.json()["ids"])
        assert all(isinstance(e["ts"], int) for e in listed)


# ------------------------------------------------------------------------- call loop


async def test_sequential_steps_are_memoized(dev: Stack) -> None:
    run = await run_one(dev.base, "test/seq", {"n": 7})
    assert run["status"] == "Completed", run
    assert run["output"] == {"a": 1, "b": 2, "c": 3, "sum": 6, "n": 7}
    assert run["function_id"] == "exec-test-seq"
    event_id = run["event_id"]
    for step in "abc":
        assert dev.rec.count(f"{event_id}:{step}") == 1  # no step ran twice
    # N sequential steps take N + 1 calls: one new step per call, then the return.
    assert run["sdk_calls"] == 4 and run["step_count"] == 3
    assert [s["name"] for s in run["steps"]] == ["a", "b", "c"]
    assert all(s["attempts"] == 1 and s["status"] == "completed" for s in run["steps"])
    assert run["started_at"] <= run["ended_at"]
    same = httpx.get(f"{dev.base}/v1/runs/{run['run_id']}").json()["data"]
    assert same["status"] == "Completed" and same["output"] == run["output"]
    assert httpx.get(f"{dev.base}/v1/runs/nope").status_code == 404


async def test_flaky_step_is_retried_with_backoff(dev: Stack) -> None:
    run = await run_one(dev.base, "test/flaky")
    assert run["status"] == "Completed", run
    assert run["output"] == "ok after 3"
    key = f"{run['event_id']}:shaky"
    assert dev.rec.count(key) == 3
    t = dev.rec.times[key]
    assert t[1] - t[0] >= 0.05 - 0.01 and t[2] - t[1] >= 0.1 - 0.01  # the configured backoff
    (step,) = run["steps"]
    assert step["attempts"] == 3 and step["status"] == "completed"
    assert run["sdk_calls"] == 4


async def test_nonretriable_error_fails_at_once(dev: Stack) -> None:
    run = await run_one(dev.base, "test/nonretriable")
    assert run["status"] == "Failed"
    assert run["error"]["name"] == "NonRetriableError"
    assert run["error"]["message"] == "this input can never work"
    assert dev.rec.count(f"{run['event_id']}:body") == 1 and run["sdk_calls"] == 1


async def test_step_failure_reaches_the_call_site(dev: Stack) -> None:
    run = await run_one(dev.base, "test/caught")
    assert run["status"] == "Completed", run
    assert run["output"] == {"caught": "KeyError", "message": "'missing thing'"}
    assert dev.rec.count(f"{run['event_id']}:always") == 2  # retries=1: two attempts
    (step,) = run["steps"]
    assert step["status"] == "failed" and step["attempts"] == 2


async def test_on_failure_runs_after_a_permanent_failure(dev: Stack) -> None:
    mine = f"doomed-{uuid.uuid4().hex}"
    run = await run_one(dev.base, "test/doomed", {"why": "test"}, event_id=mine)
    assert run["status"] == "Failed"
    assert run["error"]["name"] == "ValueError" and run["error"]["message"] == "boom"
    assert dev.rec.count(f"{mine}:work") == 1  # retries=0
    async with httpx.AsyncClient(base_url=dev.base) as http:
        deadline = time.monotonic() + 10
        while True:
            events = (
                await http.get("/v1/events", params={"name": "inngest/function.failed"})
            ).json()
            hits = [e for e in events["data"] if e["data"]["run_id"] == run["run_id"]]
            if hits:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.03)
    (failed_event,) = hits
    assert failed_event["data"]["function_id"] == "exec-test-doomed"
    assert failed_event["data"]["event"]["id"] == mine
    (handler_run,) = await wait_runs(dev.base, failed_event["internal_id"])
    assert handler_run["function_id"] == "exec-test-doomed-failure"
    assert handler_run["status"] == "Completed" and handler_run["output"] == "recorded"
    recorded = [f for f in dev.rec.failures if f["run_id"] == run["run_id"]]
    assert len(recorded) == 1
    assert recorded[0]["error"]["message"] == "boom"
    assert recorded[0]["events"][0]["data"] == {"why": "test"}


async def test_parallel_steps_run_concurrently(dev: Stack) -> None:
    run = await run_one(dev.base, "test/parallel")
    assert run["status"] == "Completed", run
    assert run["output"] == {"results": ["P1", "P2", "P3"], "count": 3}
    ev = run["event_id"]
    names = ("p1", "p2", "p3")
    assert all(dev.rec.count(f"{ev}:{n}.start") == 1 for n in names)
    assert dev.rec.count(f"{ev}:after") == 1
    starts = [dev.rec.times[f"{ev}:{n}.start"][0] for n in names]
    ends = [dev.rec.times[f"{ev}:{n}.end"][0] for n in names]
    assert max(starts) < min(ends)  # all three were in flight at once
    # discovery (plans 3) + 3 targeted calls + rediscovery (runs "after") + the return
    assert run["sdk_calls"] == 6 and run["step_count"] == 4


async def test_sleep_waits_then_resumes(dev: Stack) -> None:
    run = await run_one(dev.base, "test/sleep", {"seconds": 1})
    assert run["status"] == "Completed", run
    assert run["output"]["slept"] >= 1.0
    ev = run["event_id"]
    assert dev.rec.count(f"{ev}:before") == 1 and dev.rec.count(f"{ev}:after") == 1
    nap = next(s for s in run["steps"] if s["name"] == "nap")
    assert nap["op"] == "Sleep" and nap["status"] == "completed"


async def test_retry_after_is_honoured(dev: Stack) -> None:
    run = await run_one(dev.base, "test/retry-after")
    assert run["status"] == "Completed" and run["output"] == "finally"
    t = dev.rec.times[f"{run['event_id']}:body"]
    assert len(t) == 2 and t[1] - t[0] >= 0.6  # not the 50 ms backoff
    assert run["function_errors"] == 1


async def test_duplicate_event_id_starts_one_run(dev: Stack) -> None:
    session = uuid.uuid4().hex
    first = await send(dev.base, "test/seq", {"n": 1}, event_id=session)
    second = await send(dev.base, "test/seq", {"n": 2}, event_id=session)
    assert first == second
    runs = await wait_runs(dev.base, first)
    third = await send(dev.base, "test/seq", {"n": 3}, event_id=session)
    assert third == first
    await asyncio.sleep(0.2)
    runs = await wait_runs(dev.base, session)  # the sender's id finds the event too
    assert len(runs) == 1 and runs[0]["output"]["n"] == 1
    assert dev.rec.count(f"{session}:a") == 1


async def test_cancel_a_run(dev: Stack) -> None:
    event_id = await send(dev.base, "test/sleep", {"seconds": 5})
    async with httpx.AsyncClient(base_url=dev.base) as http:
        deadline = time.monotonic() + 10
        while True:
            runs = (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]
            if runs and any(s["name"] == "nap" for s in runs[0]["steps"]):
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.03)
        answer = await http.delete(f"/v1/runs/{runs[0]['run_id']}")
        assert answer.json()["data"]["status"] == "Cancelled"
    await asyncio.sleep(0.1)
    (run,) = await wait_runs(dev.base, event_id)
    assert run["status"] == "Cancelled" and dev.rec.count(f"{run['event_id']}:after") == 0


async def test_app_down_mid_run_then_back(dev: Stack) -> None:
    event_id = await send(dev.base, "test/sleep", {"seconds": 1})
    runs = []
    deadline = time.monotonic() + 10
    while True:
        runs = httpx.get(f"{dev.base}/v1/events/{event_id}/runs").json()["data"]
        if runs and dev.rec.count(f"{runs[0]['event_id']}:before") == 1:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.to_thread(dev.app.stop)  # down during the sleep...
    await asyncio.sleep(2.0)  # ...and for about a second after it ends
    dev.app = await asyncio.to_thread(ServerThread(dev.app.app, dev.app.port).start)
    (run,) = await wait_runs(dev.base, event_id)
    assert run["status"] == "Completed", run
    assert run["unreachable_retries"] >= 1
    ev = run["event_id"]
    assert dev.rec.count(f"{ev}:before") == 1 and dev.rec.count(f"{ev}:after") == 1


async def test_app_unreachable_for_too_long_fails_the_run() -> None:
    stack = start_stack({"unreachable_budget": 0.5})
    try:
        assert sync(stack).status_code == 200
        stack.app.stop()
        run = await run_one(stack.base, "test/seq")
        assert run["status"] == "Failed" and run["error"]["name"] == "AppUnreachable"
        assert run["unreachable_retries"] >= 2
    finally:
        stack.executor.stop()


async def test_many_runs_at_once(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    events = [inngest.Event(name="test/seq", data={"n": i}) for i in range(25)]
    ids = await sender.send(events)
    assert len(set(ids)) == 25
    outputs = []
    for event_id in ids:
        (run,) = await wait_runs(dev.base, event_id)
        assert run["status"] == "Completed", run
        outputs.append(run["output"]["n"])
    assert outputs == list(range(25))


def intervals(rec: Any, event_ids: list[str]) -> list[tuple[float, float, str]]:
    """(start, end, event id) of every occupy() step the recorder saw, by start time."""
    out = []
    for event_id in event_ids:
        starts, ends = rec.times[f"{event_id}:start"], rec.times[f"{event_id}:end"]
        assert len(starts) == len(ends) > 0, (event_id, starts, ends)
        out += [(a, b, event_id) for a, b in zip(starts, ends, strict=True)]
    return sorted(out)


async def test_a_concurrency_limit_runs_one_step_at_a_time_oldest_run_first(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    ids = await sender.send(
        [inngest.Event(name="test/limited", data={"seconds": 0.3}) for _ in range(3)]
    )
    third = await wait_runs_started(dev.base, ids[2])
    assert third["queued"] is True  # it waits for the slot the older runs hold
    runs = [(await wait_runs(dev.base, event_id))[0] for event_id in ids]
    assert [r["status"] for r in runs] == ["Completed"] * 3

    steps = intervals(dev.rec, ids)
    assert len(steps) == 6
    for (_, end, _), (start, _, _) in itertools.pairwise(steps):
        assert start >= end, steps  # never two at once
    first_starts = [min(a for a, _, e in steps if e == event_id) for event_id in ids]
    assert first_starts == sorted(first_starts)  # the oldest run started first
    queues = httpx.get(f"{dev.base}/_control/queues").json()["data"]
    assert queues["exec-test-limited"]["peak"] == 1
    assert queues["exec-test-limited"]["waiting"] == 0


async def test_a_keyed_concurrency_limit_applies_per_key(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    users = ["ann", "ann", "bob"]
    ids = await sender.send(
        [inngest.Event(name="test/per-user", data={"user": u, "seconds": 0.4}) for u in users]
    )
    for event_id in ids:
        (run,) = await wait_runs(dev.base, event_id)
        assert run["status"] == "Completed", run
    ann = intervals(dev.rec, ids[:2])
    assert ann[1][0] >= ann[0][1]  # Ann's two runs one after the other
    (bob,) = intervals(dev.rec, ids[2:])
    assert bob[0] < ann[0][1]  # Bob's ran beside Ann's first: another key, another queue


def sync_one_function(**options: Any) -> httpx.Response:
    """Sync an app of one function with ``options`` to a fresh executor; its answer."""
    port = free_port()
    executor = ServerThread(create_app(fast_config(port)), port).start()
    client = inngest.Inngest(
        app_id="exec-test-options",
        is_production=False,
        api_base_url=executor.url,
        event_api_base_url=executor.url,
    )
    options.setdefault("trigger", inngest.TriggerEvent(event="test/options"))

    @client.create_function(fn_id="optioned", **options)
    async def optioned(ctx: inngest.Context) -> None:
        return None

    app = fastapi.FastAPI()
    inngest.fast_api.serve(app, client, [optioned])
    served = ServerThread(app, free_port()).start()
    try:
        answer = httpx.post(
            f"{executor.url}/_control/sync", json={"url": f"{served.url}/api/inngest"}, timeout=30
        )
        if answer.status_code != 200:
            assert httpx.get(f"{executor.url}/v1/functions").json()["data"] == []
        return answer
    finally:
        served.stop()
        executor.stop()


def test_flow_control_the_executor_lacks_is_refused_at_sync() -> None:
    answer = sync_one_function(priority=inngest.Priority(run="event.data.rank"))
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert "exec-test-options-optioned" in error and "priority is not implemented" in error


def test_a_bad_expression_fails_the_sync_naming_the_function() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"trigger": inngest.TriggerEvent(event="t/x", expression="event.data.n >")}, "triggers"),
        ({"concurrency": [inngest.Concurrency(limit=1, key="evnt.data.user")]}, "evnt"),
        ({"cancel": [inngest.Cancel(event="t/stop", if_exp="async.data.x ==")]}, "cancel[0]"),
    ]
    for options, where in cases:
        answer = sync_one_function(**options)
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert "exec-test-options-optioned" in error and where in error, error


async def test_unsupported_opcode_fails_the_run_clearly(dev: Stack) -> None:
    run = await run_one(dev.base, "test/infer")
    assert run["status"] == "Failed"
    assert run["error"]["name"] == "UnsupportedOpcode"
    assert "AIGateway" in run["error"]["message"]


# ------------------------------------------------- expressions, flow control, waits


async def wait_for(what: Any, timeout: float = 15.0) -> Any:
    """Poll ``what()`` (sync) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.03)


def event_record(base: str, event_id: str) -> dict[str, Any]:
    """The executor's record of one event, by its internal id."""
    events = httpx.get(f"{base}/v1/events", params={"limit": 1000}).json()["data"]
    (found,) = [e for e in events if e["internal_id"] == event_id]
    assert isinstance(found, dict)
    return found


async def test_trigger_if_expressions_filter_events(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    ids = await sender.send(
        [inngest.Event(name="test/number", data={"n": n}) for n in (1, 2, 1.6, "3")]
    )
    (two,) = await wait_runs(dev.base, ids[1])
    (more,) = await wait_runs(dev.base, ids[2])
    assert two["output"] == 2 and more["output"] == 1.6  # int and double against 1.5
    for skipped in (ids[0], ids[3]):  # 1 is not > 1.5; a string does not compare: no match
        assert event_record(dev.base, skipped)["run_ids"] == []


async def test_cancel_on_with_if_cancels_the_matching_run_at_a_step_boundary(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    job_a, job_b = uuid.uuid4().hex, uuid.uuid4().hex
    ids = await sender.send(
        [
            inngest.Event(name="test/stoppable", data={"job": job, "seconds": 0.6})
            for job in (job_a, job_b)
        ]
    )
    await wait_for(lambda: all(dev.rec.count(f"{i}:start") for i in ids))  # both in "work"
    await sender.send(inngest.Event(name="test/stop", data={"job": job_a}))
    (cancelled,) = await wait_runs(dev.base, ids[0])
    (finished,) = await wait_runs(dev.base, ids[1])
    assert cancelled["status"] == "Cancelled" and finished["status"] == "Completed"
    # The step in flight ran to its end; the step after it never ran.
    await wait_for(lambda: dev.rec.count(f"{ids[0]}:end") == 1)
    await asyncio.sleep(0.2)
    assert dev.rec.count(f"{ids[0]}:after") == 0 and dev.rec.count(f"{ids[1]}:after") == 1

    def cancelled_event() -> list[dict[str, Any]]:
        events = httpx.get(
            f"{dev.base}/v1/events", params={"name": "inngest/function.cancelled"}
        ).json()["data"]
        return [e for e in events if e["data"]["run_id"] == cancelled["run_id"]]

    (event,) = await wait_for(cancelled_event)
    assert event["id"] == cancelled["run_id"]
    assert event["data"]["function_id"] == "exec-test-stoppable"
    assert event["data"]["error"]["message"] == "function cancelled"
    assert event["data"]["event"]["data"]["job"] == job_a
    assert not [e for e in cancelled_event() if e["data"]["run_id"] == finished["run_id"]]


async def test_cancelling_through_the_api_emits_function_cancelled(dev: Stack) -> None:
    event_id = await send(dev.base, "test/sleep", {"seconds": 5})
    run = await wait_runs_started(dev.base, event_id)
    answer = httpx.delete(f"{dev.base}/v1/runs/{run['run_id']}")
    assert answer.json()["data"]["status"] == "Cancelled"
    events = await wait_for(
        lambda: [
            e
            for e in httpx.get(
                f"{dev.base}/v1/events", params={"name": "inngest/function.cancelled"}
            ).json()["data"]
            if e["data"]["run_id"] == run["run_id"]
        ]
    )
    assert len(events) == 1
    assert httpx.delete(f"{dev.base}/v1/runs/{run['run_id']}").status_code == 200  # no second


async def test_wait_for_event_gets_the_matching_event(dev: Stack) -> None:
    ticket = uuid.uuid4().hex
    event_id = await send(dev.base, "test/wait", {"ticket": ticket})

    def waiting() -> bool:
        runs = httpx.get(f"{dev.base}/v1/events/{event_id}/runs").json()["data"]
        return bool(runs) and any(s["status"] == "waiting" for s in runs[0]["steps"])

    await wait_for(waiting)
    await send(dev.base, "test/approved", {"ticket": "another", "by": "mallory"})
    approval = await send(dev.base, "test/approved", {"ticket": ticket, "by": "ann"})
    (run,) = await wait_runs(dev.base, event_id)
    assert run["status"] == "Completed", run
    assert run["output"]["by"] == "ann"
    assert run["output"]["id"] == event_record(dev.base, approval)["id"]


async def test_wait_for_event_times_out_to_none(dev: Stack) -> None:
    run = await run_one(dev.base, "test/wait", {"ticket": uuid.uuid4().hex, "seconds": 1})
    assert run["status"] == "Completed" and run["output"] is None


async def test_rate_limit_skips_events_over_the_limit_per_key(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    ann, bob = uuid.uuid4().hex, uuid.uuid4().hex
    users = [ann, ann, ann, bob]
    ids = await sender.send(
        [
            inngest.Event(name="test/rate-limited", data={"user": u, "n": i})
            for i, u in enumerate(users)
        ]
    )
    (first,) = await wait_runs(dev.base, ids[0])
    (bobs,) = await wait_runs(dev.base, ids[3])
    assert first["output"] == 0 and bobs["output"] == 3  # another key, its own limit
    for skipped in ids[1:3]:
        record = event_record(dev.base, skipped)
        assert record["run_ids"] == []
        assert "rate limit" in record["skipped"]["exec-test-rate-limited"]


async def test_throttle_delays_runs_and_runs_them_all_in_order(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    ids = await sender.send([inngest.Event(name="test/throttled", data={"n": n}) for n in range(3)])
    third = await wait_runs_started(dev.base, ids[2])
    assert third["queued"] is True  # one run per second: the third waits its turn
    runs = [(await wait_runs(dev.base, event_id))[0] for event_id in ids]
    assert [r["output"] for r in runs] == [0, 1, 2]
    starts = [dev.rec.times[f"{event_id}:work"][0] for event_id in ids]
    assert starts == sorted(starts)  # first in, first out
    # Spaced by the period: each run had finished before the next one's step began.
    for before, after in itertools.pairwise(runs):
        assert before["ended_at"] <= after["steps"][0]["started_at"], (before, after)


async def test_debounce_runs_once_with_the_last_event(dev: Stack) -> None:
    sender = inngest.Inngest(
        app_id="exec-test-sender", is_production=False, event_api_base_url=dev.base
    )
    user = uuid.uuid4().hex
    ids = []
    for n in range(3):
        ids += await sender.send(inngest.Event(name="test/debounced", data={"user": user, "n": n}))
    other = await send(dev.base, "test/debounced", {"user": uuid.uuid4().hex, "n": 9})
    (run,) = await wait_runs(dev.base, ids[2])
    assert run["status"] == "Completed" and run["output"] == 2  # the last event's data
    (others,) = await wait_runs(dev.base, other)  # another key is debounced apart
    assert others["output"] == 9
    for superseded in ids[:2]:
        record = event_record(dev.base, superseded)
        assert record["run_ids"] == [] and "debounced" in record["skipped"]["exec-test-debounced"]


async def test_idempotency_key_starts_one_run(dev: Stack) -> None:
    order = uuid.uuid4().hex
    first = await send(dev.base, "test/idempotent", {"order": order, "n": 1})
    second = await send(dev.base, "test/idempotent", {"order": order, "n": 2})
    other = await send(dev.base, "test/idempotent", {"order": uuid.uuid4().hex, "n": 3})
    assert first != second  # two events, each with its own id...
    (run,) = await wait_runs(dev.base, first)
    assert run["output"] == 1
    record = event_record(dev.base, second)
    assert record["run_ids"] == []  # ...but one run for the key
    assert "idempotency" in record["skipped"]["exec-test-idempotent"]
    (third,) = await wait_runs(dev.base, other)
    assert third["output"] == 3


async def test_request_timeout_uses_attempts() -> None:
    stack = start_stack({"request_timeout": 0.3})
    try:
        assert sync(stack).status_code == 200
        run = await run_one(stack.base, "test/slow", {"seconds": 0.6})
        assert run["status"] == "Failed" and run["error"]["name"] == "RequestTimeout"
        assert run["sdk_calls"] == 2 and run["function_errors"] == 2  # retries=1
    finally:
        stack.app.stop()
        stack.executor.stop()


# --------------------------------------------------------------------------- signing


async def test_signed_production_app_end_to_end(signed: Stack) -> None:
    run = await run_one(signed.base, "test/seq", {"n": 5}, event_key=EVENT_KEY)
    assert run["status"] == "Completed", run
    assert run["output"]["sum"] == 6 and run["output"]["n"] == 5
    run = await run_one(signed.base, "test/parallel", event_key=EVENT_KEY)
    assert run["status"] == "Completed", run


async def test_signed_executor_checks_event_key(signed: Stack) -> None:
    answer = httpx.post(f"{signed.base}/e/wrong-key", json={"name": "test/seq", "data": {}})
    assert answer.status_code == 401 and "error" in answer.json()
    with pytest.raises(Exception, match="Event key not found"):
        await send(signed.base, "test/seq", event_key="wrong-key")


def test_signed_app_checks_signatures_directly(signed: Stack) -> None:
    body = json.dumps(
        {
            "event": {"name": "test/seq", "data": {}, "id": "direct", "ts": 1},
            "events": [{"name": "test/seq", "data": {}, "id": "direct", "ts": 1}],
            "steps": {},
            "use_api": False,
            "ctx": {
                "run_id": "direct-run",
                "attempt": 0,
                "max_attempts": 5,
                "disable_immediate_execution": False,
                "use_api": False,
                "stack": {"stack": [], "current": 0},
            },
        }
    ).encode()
    url = f"{signed.serve_url}?fnId=exec-test-seq&stepId=step"
    for key in (WRONG_KEY, None):
        headers = {"content-type": "application/json", "x-inngest-server-kind": "cloud"}
        if key:
            headers["x-inngest-signature"] = signing.sign(body, key)
        assert httpx.post(url, content=body, headers=headers).status_code == 401
    headers = {"content-type": "application/json", "x-inngest-signature": signing.sign(body, KEY)}
    answer = httpx.post(url, content=body, headers=headers)
    assert answer.status_code == 206
    assert answer.json()[0]["op"] == "StepRun"
    signing.verify(answer.headers["x-inngest-signature"], answer.content, KEY, canonicalize=False)
    with pytest.raises(signing.SignatureError):
        signing.verify(
            answer.headers["x-inngest-signature"], answer.content, WRONG_KEY, canonicalize=False
        )


async def test_wrong_signing_key_is_rejected_both_ways() -> None:
    stack = start_stack({"signing_key": WRONG_KEY}, signing_key=KEY)
    try:
        # The app proves its key when registering: the executor refuses it.
        answer = sync(stack)
        assert answer.status_code == 502
        assert "Authorization" in answer.json()["error"]
        assert httpx.get(f"{stack.base}/v1/functions").json()["data"] == []
        # Registered by hand (with the executor's own key), calls are then refused by the app.
        fn_url = f"{stack.serve_url}?fnId=exec-test-seq&stepId=step"
        body = {
            "appname": "exec-test",
            "url": stack.serve_url,
            "functions": [
                {
                    "id": "exec-test-seq",
                    "name": "seq",
                    "triggers": [{"event": "test/seq"}],
                    "steps": {
                        "step": {
                            "id": "step",
                            "name": "step",
                            "runtime": {"type": "http", "url": fn_url},
                            "retries": {"attempts": 1},
                        }
                    },
                }
            ],
        }
        auth = {"authorization": f"Bearer {signing.bearer_token(WRONG_KEY)}"}
        registered = httpx.post(f"{stack.base}/fn/register", json=body, headers=auth)
        assert registered.json() == {"ok": True, "modified": True}
        run = await run_one(stack.base, "test/seq")
        assert run["status"] == "Failed"
        assert run["error"]["name"] == "SignatureRejected" and "401" in run["error"]["message"]
        assert run["sdk_calls"] == 2  # retries=1
        assert stack.rec.count(f"{run['event_id']}:a") == 0
    finally:
        stack.app.stop()
        stack.executor.stop()


async def test_dev_executor_cannot_sync_a_production_app() -> None:
    stack = start_stack(signing_key=KEY)
    try:
        answer = sync(stack)
        assert answer.status_code == 502 and "Dev Server" in answer.json()["error"]
    finally:
        stack.app.stop()
        stack.executor.stop()


async def test_streaming_app_signed() -> None:
    stack = start_stack({"signing_key": KEY}, signing_key=KEY, streaming=True, app_id="exec-stream")
    try:
        assert sync(stack).status_code == 200
        run = await run_one(stack.base, "test/seq", {"n": 1})
        assert run["status"] == "Completed", run
        assert run["output"]["sum"] == 6
        run = await run_one(stack.base, "test/nonretriable")
        assert run["status"] == "Failed" and run["sdk_calls"] == 1
    finally:
        stack.app.stop()
        stack.executor.stop()


# ------------------------------------------------------------------------------- CLI


def test_cli_prints_base_url_and_never_the_key() -> None:
    env = {**os.environ, "EXEC_TEST_KEY": KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tripkit.devstack.executor",
            "--port",
            "0",
            "--signing-key-env",
            "EXEC_TEST_KEY",
            "--backoff-ms",
            "10,20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("INNGEST_BASE_URL=http://127.0.0.1:"), line
        base = line.split("=", 1)[1]
        assert httpx.get(f"{base}/health").json()["message"] == "OK"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert KEY not in out + err and KEY[13:] not in out + err
    missing = subprocess.run(
        [sys.executable, "-m", "tripkit.devstack.executor", "--signing-key-env", "NOPE_UNSET"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "NOPE_UNSET"},
    )
    assert missing.returncode == 2 and "NOPE_UNSET" in missing.stderr


# ------------------------------------------------------------------------ the pieces


def test_when_and_backoff() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_when("2.5", now) == 2.5
    assert parse_when("2025-01-01T12:00:03.500Z", now) == 3.5
    assert parse_when("Wed, 01 Jan 2025 12:00:10 GMT", now) == 10.0
    assert parse_when("2024-01-01T00:00:00Z", now) == 0.0
    assert parse_when("soon", now) is None
    config = fast_config(1, backoff=(1.0, 2.0), jitter=0.0)
    assert [config.retry_delay(n) for n in range(4)] == [1.0, 2.0, 2.0, 2.0]
    jittery = fast_config(1, backoff=lambda n: 10.0 * (n + 1), jitter=0.1)
    assert all(10.0 <= jittery.retry_delay(0) <= 11.0 for _ in range(50))
    default = ExecutorConfig()
    assert default.retry_delay(0) >= 15.0 and default.retry_delay(9) >= 300.0
    with pytest.raises(ConfigError):
        ExecutorConfig(signing_key="signkey-test-zz")
    with pytest.raises(ConfigError):
        ExecutorConfig(backoff=())


def test_answers_that_are_not_from_the_sdk() -> None:
    engine = Engine(fast_config(1))
    url = "http://127.0.0.1:1/api/inngest"
    sent = datetime.now(UTC)

    def classify(status: int, headers: dict[str, str], body: bytes = b"") -> Any:
        response = httpx.Response(status, headers=headers, content=body)
        response.request = httpx.Request("POST", url)
        return engine.caller.classify(response, sent)

    sdk = {"x-inngest-sdk": "inngest-py:v0.5.19"}
    for status in (502, 503, 504):
        assert classify(status, sdk).kind == "unreachable"
    assert classify(200, {}, b"{}").kind == "unreachable"  # not the SDK answering
    assert classify(404, {}, b"Not Found").kind == "unreachable"
    refused = classify(401, {"x-inngest-sdk-handled": "true"}, b'{"message": "Unauthorized"}')
    assert refused.kind == "error" and refused.error["name"] == "SignatureRejected"
    done = classify(200, sdk, b'{"x": 1}')
    assert done.kind == "done" and done.output == {"x": 1}
    failed = classify(500, {**sdk, "x-inngest-no-retry": "true"}, b'{"name": "E", "message": "m"}')
    assert failed.kind == "error" and failed.no_retry and failed.error["message"] == "m"
    later = classify(500, {**sdk, "retry-after": "7"}, b"{}")
    assert later.retry_after == 7.0 and not later.no_retry
    assert classify(206, sdk, b"[]").error["name"] == "ProtocolError"
    assert classify(206, sdk, b'[{"op": "StepRun"}]').error["name"] == "ProtocolError"
    assert classify(200, sdk, b"<html>").error["name"] == "ProtocolError"
    signed = Engine(fast_config(1, signing_key=KEY))
    response = httpx.Response(200, headers=sdk, content=b"{}")
    invalid = signed.caller.classify(response, sent).error
    assert invalid is not None and invalid["name"] == "SignatureInvalid"
