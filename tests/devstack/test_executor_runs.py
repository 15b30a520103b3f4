"""Run mechanics of the local executor against the REAL inngest SDK, over real HTTP.

step.invoke, sleep_until, parallel steps in race mode, timeouts (start and finish),
cron triggers, batch_events, the failure and cancellation events, the event-id seed and
partial sends. The app is executor_runs_app.py; the executor reads cron schedules on a
clock that runs 60 times faster than real time, so a per-minute cron fires each second.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import fastapi
import httpx
import inngest
import inngest.fast_api
import pytest
from helpers import ServerThread, free_port
from inngest._internal.client_lib.client import _seed as sdk_seed
from inngest._internal.errors import SendEventsError
from test_executor import fast_config, sample, send, wait_runs

from tripkit.devstack.executor import create_app
from tripkit.devstack.executor.durations import parse_duration
from tripkit.devstack.executor.event_ids import seeded_event_id
from tripkit.devstack.executor.schedule import CronSchedule

pytestmark = pytest.mark.timeout(60)
SPEEDUP = 60.0  # the executor's cron clock: one minute per real second


def _load_app() -> ModuleType:
    path = Path(__file__).with_name("executor_runs_app.py")
    spec = importlib.util.spec_from_file_location("_executor_runs_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runs_app = _load_app()


@dataclass
class Recorder(sample.Recorder):  # type: ignore[misc,name-defined]
    cancelled: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Stack:
    executor: ServerThread
    app: ServerThread
    rec: Recorder

    @property
    def base(self) -> str:
        return self.executor.url


def fast_clock() -> Any:
    start, origin = time.monotonic(), datetime.now(UTC)
    return lambda: origin + timedelta(seconds=(time.monotonic() - start) * SPEEDUP)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    port = free_port()
    config = fast_config(port, cron_poll=0.05)
    executor = ServerThread(create_app(config, clock=fast_clock()), port).start()
    rec = Recorder()
    app = ServerThread(runs_app.build_app(api_base_url=executor.url, rec=rec), free_port()).start()
    answer = httpx.post(
        f"{executor.url}/_control/sync", json={"url": f"{app.url}/api/inngest"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    yield Stack(executor, app, rec)
    app.stop()
    executor.stop()


async def events_named(base: str, name: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        found: list[dict[str, Any]] = (
            await http.get(f"{base}/v1/events", params={"name": name, "limit": 1000})
        ).json()["data"]
        return found


async def until(check: Any, timeout: float = 15.0) -> Any:
    """Poll ``check()`` (async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def one_run(base: str, name: str, data: dict[str, Any]) -> dict[str, Any]:
    event_id = await send(base, name, data)
    (run,) = await wait_runs(base, event_id)
    return run


# ------------------------------------------------------------------------------- steps


async def test_invoke_returns_the_invoked_functions_result(stack: Stack) -> None:
    run = await one_run(stack.base, "runs/parent", {"n": 21, "tag": "ok"})
    assert run["status"] == "Completed", run
    assert run["output"] == {"result": {"doubled": 42, "event": "inngest/function.invoked"}}
    assert stack.rec.count("child:ok") == 1
    (invoke,) = [s for s in run["steps"] if s["op"] == "InvokeFunction"]
    assert invoke["status"] == "completed"
    (invoked,) = await events_named(stack.base, "inngest/function.invoked")
    assert invoked["data"]["n"] == 21
    meta = invoked["data"]["_inngest"]
    assert meta["fn_id"] == "exec-runs-child" and meta["source_fn_id"] == "exec-runs-parent"
    assert meta["invoke_correlation_id"].startswith(run["run_id"] + ".")


async def test_invoke_failure_and_timeout_reach_the_call_site(stack: Stack) -> None:
    failed = await one_run(stack.base, "runs/parent", {"n": 1, "tag": "bad", "fail": True})
    assert failed["status"] == "Completed", failed
    assert failed["output"] == {"error": "ValueError", "message": "child refused 1"}
    late = await one_run(
        stack.base, "runs/parent", {"n": 1, "tag": "late", "seconds": 2, "timeout": 1}
    )
    assert late["output"] == {
        "error": "InngestInvokeTimeoutError",
        "message": "Timed out waiting for invoked function to complete",
    }


async def test_sleep_until_wakes_at_the_time(stack: Stack) -> None:
    at = time.time() + 1.0
    run = await one_run(stack.base, "runs/alarm", {"at": at})
    assert run["status"] == "Completed", run
    assert run["output"]["woke"] >= at
    (nap,) = [s for s in run["steps"] if s["op"] == "Sleep"]
    assert nap["name"] == "until" and nap["status"] == "completed"


async def test_race_mode_asks_for_the_next_step_after_each_parallel_step(stack: Stack) -> None:
    run = await one_run(stack.base, "runs/race", {})
    assert run["status"] == "Completed", run
    assert run["output"] == "a2+b1"
    times = stack.rec.times
    ev = run["event_id"]
    ev_id = next(e for e in await events_named(stack.base, "runs/race") if e["internal_id"] == ev)
    key = ev_id["id"]
    # a2 follows a1 while b1 is still running: the branch did not wait for b1.
    assert times[f"{key}:a2.start"][0] < times[f"{key}:b1.end"][0]
    assert all(stack.rec.count(f"{key}:{s}.start") == 1 for s in ("a1", "a2", "b1"))


# ---------------------------------------------------------------------------- timeouts


async def test_start_timeout_cancels_a_run_left_in_the_queue(stack: Stack) -> None:
    sender = inngest.Inngest(app_id="sender", is_production=False, event_api_base_url=stack.base)
    first, second = await sender.send(
        [inngest.Event(name="runs/hog", data={"seconds": 2}), inngest.Event(name="runs/hog")]
    )
    (held,) = await wait_runs(stack.base, first)
    (queued,) = await wait_runs(stack.base, second)
    assert held["status"] == "Completed", held
    assert queued["status"] == "Cancelled" and "timeouts.start" in queued["cancel_reason"]
    assert queued["sdk_calls"] == 0
    cancelled = await until(lambda: _cancelled_events(stack.base, queued["run_id"]))
    data = cancelled[0]["data"]
    assert data["function_id"] == "exec-runs-hog" and data["run_id"] == queued["run_id"]
    assert data["error"] == {
        "error": "function cancelled",
        "message": "function cancelled",
        "name": "Error",
    }
    assert data["event"]["name"] == "runs/hog" and len(data["events"]) == 1
    # A function triggered by inngest/function.cancelled saw it too.
    await until(lambda: _async([c for c in stack.rec.cancelled if c["run_id"] == queued["run_id"]]))


async def test_finish_timeout_stops_the_run_at_its_next_step_boundary(stack: Stack) -> None:
    event_id = await send(stack.base, "runs/overrun", {"seconds": 1.5})
    (run,) = await wait_runs(stack.base, event_id)
    assert run["status"] == "Cancelled" and "timeouts.finish" in run["cancel_reason"]
    key = (await _event(stack.base, event_id))["id"]
    # The step in flight when the timeout hit runs to its end; nothing runs after it.
    await until(lambda: _async(stack.rec.count(f"{key}:first.end") == 1))
    await asyncio.sleep(0.3)
    assert stack.rec.count(f"{key}:second.start") == 0
    (after,) = await wait_runs(stack.base, event_id)
    assert after["sdk_calls"] == 1 and after["status"] == "Cancelled"
    assert await until(lambda: _cancelled_events(stack.base, run["run_id"]))


# -------------------------------------------------------------------------------- cron


async def test_cron_function_runs_on_its_schedule(stack: Stack) -> None:
    before = stack.rec.count("ticker")
    await until(lambda: _async(stack.rec.count("ticker") >= before + 2), timeout=10)
    timers = await events_named(stack.base, "inngest/scheduled.timer")
    assert timers and all(t["data"] == {"cron": runs_app.CRON} for t in timers)
    latest = timers[0]
    assert latest["id"].endswith(":00Z")  # Inngest's id: the scheduled minute
    (run,) = await wait_runs(stack.base, latest["internal_id"])
    assert run["function_id"] == "exec-runs-ticker" and run["status"] == "Completed"
    assert run["output"]["name"] == "inngest/scheduled.timer"
    upcoming = httpx.get(f"{stack.base}/_control/cron").json()["data"]
    assert list(upcoming) == ["exec-runs-ticker * * * * *"]


# ------------------------------------------------------------------------ batch_events


async def test_batch_events_runs_a_full_batch_at_once_and_the_rest_at_timeout(
    stack: Stack,
) -> None:
    sender = inngest.Inngest(app_id="sender", is_production=False, event_api_base_url=stack.base)
    ids = await sender.send([inngest.Event(name="runs/bundle", data={"n": n}) for n in range(4)])
    (full,) = await wait_runs(stack.base, ids[0])
    assert full["output"] == {"ns": [0, 1, 2], "first": 0}
    assert full["event_ids"] == ids[:3]
    (rest,) = await wait_runs(stack.base, ids[3])  # alone: it waited for the 1 s timeout
    assert rest["output"] == {"ns": [3], "first": 3}
    assert rest["run_id"] != full["run_id"]


async def test_batch_key_and_if_split_and_skip_batches(stack: Stack) -> None:
    sender = inngest.Inngest(app_id="sender", is_production=False, event_api_base_url=stack.base)
    sent = [("ann", 0, False), ("bob", 1, False), ("ann", 2, False), ("ann", 3, True)]
    ids = await sender.send(
        [  # a VIP event is not for batching (if): it gets a run of its own at once
            inngest.Event(name="runs/user-bundle", data={"user": u, "n": n, "vip": vip})
            for u, n, vip in sent
        ]
    )
    (ann,) = await wait_runs(stack.base, ids[0])
    assert ann["output"] == [0, 2] and ann["event_ids"] == [ids[0], ids[2]]
    (vip,) = await wait_runs(stack.base, ids[3])
    assert vip["output"] == [3]
    (bob,) = await wait_runs(stack.base, ids[1])  # alone in its key: after the timeout
    assert bob["output"] == [1]


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (inngest.TriggerCron(cron="61 * * * *"), "'61 * * * *' is not a valid cron"),
        (inngest.TriggerEvent(event="inngest/function.finished"), "never sends"),
    ],
)
def test_triggers_that_could_never_fire_are_refused_at_sync_naming_the_function(
    trigger: Any, expected: str
) -> None:
    port = free_port()
    executor = ServerThread(create_app(fast_config(port)), port).start()
    client = inngest.Inngest(app_id="exec-odd", is_production=False, api_base_url=executor.url)

    @client.create_function(fn_id="odd", trigger=trigger)
    async def odd(ctx: inngest.Context) -> None:
        return None

    app = fastapi.FastAPI()
    inngest.fast_api.serve(app, client, [odd])
    served = ServerThread(app, free_port()).start()
    try:
        answer = httpx.post(
            f"{executor.url}/_control/sync", json={"url": f"{served.url}/api/inngest"}, timeout=30
        )
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert "exec-odd-odd" in error and expected in error
        assert httpx.get(f"{executor.url}/v1/functions").json()["data"] == []
    finally:
        served.stop()
        executor.stop()


# ---------------------------------------------------------------------- failure event


async def test_failure_event_has_inngests_error_shape(stack: Stack) -> None:
    run = await one_run(stack.base, "runs/breaks", {"n": 7})
    assert run["status"] == "Failed"
    failed = await until(lambda: _failed_events(stack.base, run["run_id"]))
    (event,) = failed
    assert event["id"] == run["run_id"]  # Inngest's id for it, so it is never duplicated
    data = event["data"]
    assert data["function_id"] == "exec-runs-breaks" and data["run_id"] == run["run_id"]
    assert data["event"]["data"] == {"n": 7} and data["events"] == [data["event"]]
    error = data["error"]
    assert error["error"] == "invalid status code: 500"
    assert error["name"] == "ValueError" and error["message"] == "broken 7"
    assert "Traceback" in error["stack"] or "ValueError" in error["stack"]
    seen = await until(
        lambda: _async([f for f in stack.rec.failures if f["run_id"] == run["run_id"]])
    )
    assert seen[0]["error"] == error  # what the on_failure handler received


# -------------------------------------------------------------------------- event API


async def test_a_retried_send_with_the_same_seed_gets_the_same_ids_and_one_run(
    stack: Stack,
) -> None:
    seed = sdk_seed()  # the SDK's own header value: "<ms>,<base64 entropy>"
    body = [{"name": "runs/alarm", "data": {"at": 0}}, {"name": "runs/alarm", "data": {"at": 0}}]
    async with httpx.AsyncClient(base_url=stack.base) as http:
        headers = {"x-inngest-event-id-seed": seed}
        first = (await http.post("/e/key", json=body, headers=headers)).json()
        again = (await http.post("/e/key", json=body, headers=headers)).json()
        other = (
            await http.post("/e/key", json=body, headers={"x-inngest-event-id-seed": sdk_seed()})
        ).json()
    assert first["status"] == 200 and first["ids"] == again["ids"]
    assert len(set(first["ids"])) == 2 and set(other["ids"]).isdisjoint(first["ids"])
    assert first["ids"] == [seeded_event_id(seed, 1), seeded_event_id(seed, 2)]
    for event_id in first["ids"]:
        runs = await wait_runs(stack.base, event_id)
        assert len(runs) == 1, runs  # the retry started nothing


async def test_a_partial_send_keeps_the_events_before_the_bad_one(stack: Stack) -> None:
    sender = inngest.Inngest(app_id="sender", is_production=False, event_api_base_url=stack.base)
    with pytest.raises(SendEventsError) as caught:
        await sender.send(
            [
                inngest.Event(name="runs/alarm", data={"at": 0, "k": "kept", "_inngest": {}}),
                inngest.Event(name="inngest/reserved", data={}),
                inngest.Event(name="runs/alarm", data={"at": 0, "k": "dropped"}),
            ]
        )
    err = caught.value
    assert "events[1].name" in str(err) and "reserved" in str(err)
    (kept,) = err.ids
    (run,) = await wait_runs(stack.base, kept)
    assert run["status"] == "Completed"
    sent = await events_named(stack.base, "runs/alarm")
    (stored,) = [e for e in sent if e["data"].get("k") == "kept"]
    assert "_inngest" not in stored["data"]  # the server's own key is stripped, as Inngest does
    assert not any(e["data"].get("k") == "dropped" for e in sent)


# ------------------------------------------------------------------------- the pieces


def test_cron_schedules_and_durations() -> None:
    start = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert CronSchedule.parse("* * * * *").next_after(start) == start.replace(minute=1, second=0)
    paris = CronSchedule.parse("TZ=Europe/Paris 0 9 * * *")
    assert paris.next_after(start) == datetime(2026, 1, 2, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert CronSchedule.parse("@hourly").next_after(start) == datetime(2026, 1, 1, 13, tzinfo=UTC)
    for bad in ("* * * *", "61 * * * *", "TZ=Mars/Base * * * * *", "*/5 * * * * *"):
        with pytest.raises(ValueError, match="cron"):
            CronSchedule.parse(bad)
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
    assert seeded_event_id("nope", 1) is None and seeded_event_id("1,AAAA", 1) is None


async def _async(value: Any) -> Any:
    return value


async def _event(base: str, event_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        for event in (await http.get(f"{base}/v1/events", params={"limit": 1000})).json()["data"]:
            if event["internal_id"] == event_id:
                found: dict[str, Any] = event
                return found
    raise AssertionError(f"no event {event_id}")


async def _cancelled_events(base: str, run_id: str) -> list[dict[str, Any]]:
    events = await events_named(base, "inngest/function.cancelled")
    return [e for e in events if e["data"]["run_id"] == run_id]


async def _failed_events(base: str, run_id: str) -> list[dict[str, Any]]:
    events = await events_named(base, "inngest/function.failed")
    return [e for e in events if e["data"]["run_id"] == run_id]
