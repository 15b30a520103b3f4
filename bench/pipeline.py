"""Numbers for the closing note, measured on the offline stack over real HTTP.

Not a test: run it by hand (``.venv/bin/python bench/pipeline.py``). Four measurements,
each on a fresh :class:`tripkit.devstack.stack.LocalStack` (separate processes, the app
talking to Redis through the Upstash-REST gateway, as in production):

1. time to sessionId: client-side latency of ``POST /api/generate-bundles``, sequential,
   first on an idle stack (each run finishes before the next POST), then back to back
   while the earlier runs execute in the background;
2. Redis commands per generation, split into create / writes / worker reads / run record /
   polls, from the server's INFO commandstats (what Upstash bills) and, command by
   command, from MONITOR; checked against what tripkit/store.py says they should be;
3. executor work per run: SDK calls (HTTP requests from the executor to the app), steps,
   attempts per step, and Inngest executions (1 run + 1 per step: what Inngest bills);
4. push and poll at the original app's workload (5 bundles, one client): Redis commands
   per generation followed by one push client (measured) and by one client polling
   every 2 s (the writer measured, the polls projected for 6 minutes), Inngest
   executions from the run records, and the generations a month that fit the free
   tiers of Upstash and Inngest together in each mode, with the limit that binds. On a
   build without the push endpoint it says so and measures poll mode only.

Prints a Markdown summary and writes it to bench/results.md (section ``pipeline``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from shared import (
    EVENTS_PATH,
    NO_PUSH,
    SseParser,
    cpu_seconds,
    machine,
    percentile,
    preferences,
    push_route_status,
    write_section,
)

from tripkit.devstack.stack import LocalStack, StackConfig
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.usage.costs import polls_per_generation
from tripkit.usage.plans import plan
from tripkit.usage.projections import TYPICAL_DURATION_S

HERE = Path(__file__).resolve().parent
#: Upstash Redis pay-as-you-go and the free plan's commands, as the usage report prices
#: them: tripkit/data/plan_limits.json, profile "current" (each number with its source).
_UPSTASH = plan("current")
UPSTASH_USD_PER_100K = _UPSTASH.value("redis_usd_per_100k_commands") or math.nan
UPSTASH_FREE_PER_MONTH = int(_UPSTASH.redis_commands_per_month or 0)
INNGEST_LIMITS = {  # the free plan's Inngest limits and what one generation uses of each
    "inngest_executions_per_month": "executions",
    "inngest_runs_per_month": "runs",
    "inngest_steps_per_month": "steps",
}
CLIENT_POLL_INTERVAL = 2.0  # the original app's browser polls every 2 s
PROJECTED_DURATIONS = (15.0, 30.0, 60.0, 120.0)
#: Issue 9's cost targets at the original app's workload (5 bundles, ~6 minutes).
TARGET_PUSH_COMMANDS = 25
TARGET_CAPACITY = 8_000


def latency_row(label: str, values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    cells = [percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), max(ms)]
    return f"| {label} | {len(ms)} | " + " | ".join(f"{c:.1f}" for c in cells) + " |"


def wait_final(http: httpx.Client, session_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/api/session/{session_id}").json()
        if body.get("status") in ("completed", "failed"):
            return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"session {session_id} still {body.get('status')} after {timeout}s")
        time.sleep(0.05)


def post(http: httpx.Client, bundles: int) -> tuple[str, float]:
    started = time.perf_counter()
    response = http.post("/api/generate-bundles", json=preferences(bundles))
    elapsed = time.perf_counter() - started
    if response.status_code != 202:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["sessionId"]), elapsed


# ----------------------------------------------------------------- 1. time to sessionId


@dataclass
class LatencyResult:
    idle: list[float]
    loaded: list[float]
    drained: int
    failed: int
    post_seconds: float  # first to last loaded POST
    drain_seconds: float | None  # last POST to the last run final; None: timed out
    cpu: dict[str, float]  # CPU seconds per service over the loaded phase


def bench_time_to_session_id(
    requests: int, idle_requests: int, warmup: int, drain_timeout: float
) -> LatencyResult:
    print(f"[1/4] time to sessionId: {warmup} warm-up, {idle_requests} idle, {requests} loaded")
    with (
        LocalStack(StackConfig(chunk_delay=0)) as stack,
        httpx.Client(base_url=stack.api_url, timeout=30) as http,
    ):
        for _ in range(warmup):
            session_id, _ = post(http, 1)
            wait_final(http, session_id)
        idle = []
        for _ in range(idle_requests):
            session_id, elapsed = post(http, 1)
            idle.append(elapsed)
            wait_final(http, session_id)
        loaded, pending = [], []
        cpu_before = cpu_seconds(stack)
        started = time.monotonic()
        for _ in range(requests):
            session_id, elapsed = post(http, 1)
            loaded.append(elapsed)
            pending.append(session_id)
        posted = time.monotonic()
        print(f"      {requests} POSTs in {posted - started:.1f} s; waiting for the backlog")
        completed = failed = 0
        deadline = posted + drain_timeout
        while pending and time.monotonic() < deadline:
            still = []
            for session_id in pending:
                status = http.get(f"/api/session/{session_id}").json().get("status")
                if status == "completed":
                    completed += 1
                elif status == "failed":
                    failed += 1
                else:
                    still.append(session_id)
            pending = still
            if pending:
                time.sleep(0.5)
        drain = time.monotonic() - posted if not pending else None
        cpu_after = cpu_seconds(stack)
        cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    return LatencyResult(idle, loaded, completed, failed, posted - started, drain, cpu)


# ------------------------------------------------------- 2. and 3. one generation in detail


@dataclass
class Generation:
    session_id: str
    bundles: int
    polls: int
    seconds_to_id: float
    duration: float  # createdAt -> completedAt, server side
    stats: dict[str, int]  # INFO commandstats, by command
    monitor: Counter[str] = field(default_factory=Counter)  # classified, command by command
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.stats.values())

    @property
    def worker_reads(self) -> int:
        return self.stats.get("GET", 0) - self.polls

    @property
    def writes(self) -> int:  # SETs other than the create and the run record
        return self.stats.get("SET", 0) - 2  # each inside one EVAL, billed as one more

    #: The build announces each session write (a PUBLISH after the SET: push, issue 9).
    announces: bool = False

    @property
    def expected(self) -> dict[str, int]:
        writes = 1 + self.bundles + 1  # running, one per summary, complete
        return {
            "create": 1,
            "writes": writes,
            "publishes": writes if self.announces else 0,
            "worker reads": 0,  # the start event carries what the first step needs
            "run record": 1,
            "polls": self.polls,
        }

    @property
    def measured(self) -> dict[str, int]:
        return {
            "create": self.monitor["create"],
            "writes": self.monitor["write"],
            "publishes": self.monitor["PUBLISH"],
            "worker reads": self.worker_reads,
            "run record": self.monitor["run record"],
            "polls": self.polls,
        }


class Monitor:
    """Redis MONITOR in a thread: every command the server runs, classified."""

    def __init__(self, redis_url: str, prefix: str = "tripkit") -> None:
        self.prefix = prefix
        self._client = redis.Redis.from_url(redis_url)
        self._monitor = self._client.monitor()  # type: ignore[no-untyped-call]
        self._monitor.__enter__()
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._marks: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def classify(self, command: str) -> str:
        parts = command.split(" ")
        name, key = parts[0].upper(), parts[1] if len(parts) > 1 else ""
        if name == "SET" and key.startswith(f"{self.prefix}:session:"):
            if parts[-3:-2] == ["NX"]:
                return "create"
            if parts[-3:-2] == ["XX"] or parts[-4:-2] == ["XX", "GET"]:
                return "write"  # the SET inside the store's write script (EVAL)
        if name == "SET" and key.startswith(f"{self.prefix}:run:"):
            return "run record"
        if name == "GET" and key.startswith(f"{self.prefix}:session:"):
            return "GET session"
        return name

    def _run(self) -> None:
        try:
            for item in self._monitor.listen():
                command = item["command"]
                if command.startswith("ECHO bench-mark-"):
                    with self._lock:
                        self._marks.add(command.split(" ", 1)[1])
                    continue
                kind = self.classify(command)
                if kind in ("CONFIG", "INFO"):  # the measurement itself
                    continue
                with self._lock:
                    self._seen[kind] += 1
        except Exception:  # the connection was closed by close()
            return

    def take(self, marker: redis.Redis, name: str, timeout: float = 10.0) -> Counter[str]:
        """Everything seen since the last take(), fenced by an ECHO the monitor must see."""
        marker.echo(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if name in self._marks:
                    seen, self._seen = self._seen, Counter()
                    return seen
            time.sleep(0.01)
        raise RuntimeError("MONITOR did not see the marker")

    def close(self) -> None:
        self._monitor.__exit__()
        self._client.close()


def wait_run_finished(inngest_url: str, session_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The executor's run for this session, once finished (its last step is the run record)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = httpx.get(f"{inngest_url}/v1/events/{session_id}/runs", timeout=10).json()["data"]
        if runs and all(r["status"] != "Running" for r in runs):
            if len(runs) != 1:
                raise RuntimeError(f"{len(runs)} runs for one session")
            run: dict[str, Any] = runs[0]
            return run
        time.sleep(0.05)
    raise RuntimeError(f"the run for {session_id} did not finish in {timeout} s")


def bench_generations(generations: int, bundles: int, poll_interval: float) -> list[Generation]:
    print(
        f"[2/4] Redis commands: {generations} generations of {bundles} bundles, polled "
        f"every {poll_interval:g} s"
    )
    results = []
    with (
        LocalStack(StackConfig(chunk_delay=0)) as stack,
        httpx.Client(base_url=stack.api_url, timeout=30) as http,
    ):
        # Warm the app (imports, connections) so the first measured run is like the others.
        session_id, _ = post(http, 1)
        wait_final(http, session_id)
        wait_run_finished(stack.inngest_url, session_id)
        announces = push_route_status(stack.api_url, session_id) != 404

        counter = RedisCommandCounter(stack.redis_url)
        monitor = Monitor(stack.redis_url)
        marker = redis.Redis.from_url(stack.redis_url, protocol=2, lib_name=None, lib_version=None)
        marker.ping()
        try:
            for n in range(generations):
                counter.reset()
                monitor.take(marker, f"bench-mark-start-{n}")
                session_id, to_id = post(http, bundles)
                polls = 0
                while True:
                    polls += 1
                    body = http.get(f"/api/session/{session_id}").json()
                    if body["status"] in ("completed", "failed"):
                        break
                    time.sleep(poll_interval)
                if body["status"] != "completed":
                    raise RuntimeError(f"generation failed: {body.get('error')}")
                run = wait_run_finished(stack.inngest_url, session_id)
                stats = counter.counts()
                seen = monitor.take(marker, f"bench-mark-end-{n}")
                seen.pop("ECHO", None)
                stats.pop("ECHO", None)
                duration = (
                    datetime.fromisoformat(body["completedAt"])
                    - datetime.fromisoformat(body["createdAt"])
                ).total_seconds()
                results.append(
                    Generation(
                        session_id, bundles, polls, to_id, duration, stats, seen, run, announces
                    )
                )
                print(
                    f"      #{n + 1}: {sum(stats.values())} commands, {polls} polls, "
                    f"{duration:.2f} s"
                )
        finally:
            marker.close()
            monitor.close()
            counter.close()
    return results


# ------------------------------------------- 4. push and poll at the original workload


@dataclass
class ModeRun:
    """One generation followed by one client, from the POST to the end."""

    mode: str  # "push" or "poll"
    bundles: int
    stats: dict[str, int]  # INFO commandstats from before the POST to after the end
    run: dict[str, Any]
    polls: int = 0
    events: list[str] = field(default_factory=list)  # push: the event names received
    exact: bool = True  # push: ids strictly increasing, ending with the final event

    @property
    def total(self) -> int:
        return sum(self.stats.values())

    @property
    def writer(self) -> int:
        """Everything but the client's polls: the create, the worker, a push client."""
        return self.total - self.polls

    @property
    def executions(self) -> int:
        return 1 + int(self.run["step_count"])


def follow_push(api_url: str, session_id: str, timeout: float = 120.0) -> tuple[list[str], bool]:
    """One push client from the POST to the final event: the event names, and whether
    every id came once and in order."""
    names: list[str] = []
    ids: list[int] = []
    parser = SseParser()
    url = api_url + EVENTS_PATH.format(session_id=session_id)
    with httpx.stream("GET", url, timeout=httpx.Timeout(10.0, read=timeout)) as response:
        if response.status_code != 200:
            raise RuntimeError(f"the push route answered {response.status_code}")
        for line in response.iter_lines():
            event = parser.feed(line)
            if event is None:
                continue
            names.append(event.event)
            ids.append(int(event.id))
            if event.event not in ("status", "summary"):
                break
    final = bool(names) and names[-1] == "completed"
    return names, final and ids == sorted(set(ids))


def bench_modes(generations: int, bundles: int) -> tuple[list[ModeRun], bool]:
    """``generations`` generations of ``bundles`` bundles followed by push, then as many
    polled every 2 s; whether this build has push at all."""
    print(f"[4/4] push and poll: {generations} generations of {bundles} bundles each way")
    runs: list[ModeRun] = []
    with (
        LocalStack(StackConfig(chunk_delay=0)) as stack,
        httpx.Client(base_url=stack.api_url, timeout=30) as http,
    ):
        session_id, _ = post(http, 1)
        wait_final(http, session_id)
        wait_run_finished(stack.inngest_url, session_id)
        has_push = push_route_status(stack.api_url, session_id) != 404
        if not has_push:
            print(f"      {NO_PUSH}: the events route answered 404")
        counter = RedisCommandCounter(stack.redis_url)
        try:
            modes = (["push"] if has_push else []) + ["poll"]
            for mode in modes:
                for _ in range(generations):
                    counter.settled(quiet=0.2)
                    counter.reset()
                    session_id, _ = post(http, bundles)
                    run = ModeRun(mode, bundles, {}, {})
                    if mode == "push":
                        run.events, run.exact = follow_push(stack.api_url, session_id)
                    else:
                        while True:
                            run.polls += 1
                            body = http.get(f"/api/session/{session_id}").json()
                            if body["status"] in ("completed", "failed"):
                                break
                            time.sleep(CLIENT_POLL_INTERVAL)
                    run.run = wait_run_finished(stack.inngest_url, session_id)
                    run.stats = counter.settled()  # after the app drops its subscription
                    runs.append(run)
                    print(
                        f"      {mode}: {run.total} commands ({run.polls} polls), "
                        f"{run.executions} executions"
                    )
        finally:
            counter.close()
    return runs, has_push


def inngest_bound(executions: float, steps: float) -> float:
    """Generations a month the free Inngest plan allows (its runs, steps or executions)."""
    per = {"executions": executions, "runs": 1.0, "steps": steps}
    bounds = [
        value / per[unit]
        for key, unit in INNGEST_LIMITS.items()
        if (value := _UPSTASH.value(key)) is not None
    ]
    return min(bounds) if bounds else math.inf


def modes_report(args: argparse.Namespace, runs: list[ModeRun], has_push: bool) -> list[str]:
    out: list[str] = []
    w = out.append
    mean = statistics.fmean
    bundles = args.mode_bundles
    w(f"## 4. Push and poll at the original app's workload ({bundles} bundles, one client)")
    w("")
    w(
        f"Each generation measured from the POST to its end on the same stack, with INFO "
        f"commandstats reset before the POST and read once Redis was quiet after the run "
        f"ended. **push**: one client follows `GET /api/session/{{id}}/events` from the "
        f"POST to the final event. **poll**: one client polls every "
        f"{CLIENT_POLL_INTERVAL:g} s. Inngest executions = 1 run + its steps, from the "
        "executor's run records."
    )
    w("")
    if not has_push:
        w(f"**{NO_PUSH}** (the events route answered 404): only poll mode is measured.")
        w("")
    w("| mode | # | Redis commands | by command | polls | events received | Inngest executions |")
    w("| --- | ---: | ---: | --- | ---: | --- | ---: |")
    for mode in ("push", "poll"):
        for n, r in enumerate([r for r in runs if r.mode == mode], 1):
            by = ", ".join(f"{k} {v}" for k, v in sorted(r.stats.items()))
            seen = ", ".join(f"{k} {v}" for k, v in Counter(r.events).items())
            if mode == "push" and not r.exact:
                seen += " (NOT each once, in order, to `completed`)"
            w(f"| {mode} | {n} | {r.total} | {by} | {r.polls} | {seen or '-'} | {r.executions} |")
    w("")
    seconds = args.workload_seconds
    polls = polls_per_generation(seconds, CLIENT_POLL_INTERVAL)
    w(
        f"Per generation at the original app's workload ({bundles} bundles over "
        f"{seconds / 60:g} minutes, one client). Poll: everything but the polls as "
        f"measured (create, the worker's reads and writes, their announcements where the "
        f"build has push, the run record) + ceil({seconds:g} s / {CLIENT_POLL_INTERVAL:g} s) + "
        f"1 = {polls} polls, projected. Push: as measured; it does not grow with the "
        "duration (keep-alives are SSE comments, not Redis commands). Free tiers "
        f"({_UPSTASH.label}, tripkit/data/plan_limits.json): Upstash "
        f"{UPSTASH_FREE_PER_MONTH:,} commands a month, Inngest "
        + ", ".join(
            f"{int(v):,} {unit}"
            for key, unit in INNGEST_LIMITS.items()
            if (v := _UPSTASH.value(key)) is not None
        )
        + " a month."
    )
    w("")
    w(
        "| mode | Redis commands / generation | Inngest executions / generation "
        "| Upstash free allows / month | Inngest free allows / month | fit both / month "
        "| bound by |"
    )
    w("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    rows: dict[str, tuple[float, float, float]] = {}
    for mode in ("push", "poll"):
        mine = [r for r in runs if r.mode == mode]
        if not mine:
            w(f"| {mode} | {NO_PUSH} | | | | | |")
            continue
        commands = (
            mean([r.total for r in mine])
            if mode == "push"
            else (mean([r.writer for r in mine]) + polls)
        )
        executions = mean([r.executions for r in mine])
        steps = mean([float(r.run["step_count"]) for r in mine])
        redis_bound = UPSTASH_FREE_PER_MONTH / commands
        inngest = inngest_bound(executions, steps)
        fits = math.floor(min(redis_bound, inngest))
        rows[mode] = (commands, executions, fits)
        how = "measured" if mode == "push" else f"{mean([r.writer for r in mine]):g} + {polls}"
        w(
            f"| {mode} | {commands:g} ({how}) | {executions:g} | {math.floor(redis_bound):,} "
            f"| {math.floor(inngest):,} | **{fits:,}** | "
            f"{'Upstash' if redis_bound <= inngest else 'Inngest'} |"
        )
    w("")
    targets = []
    if "push" in rows:
        commands, executions, capacity = rows["push"]
        targets.append(
            f"push costs {commands:g} Redis commands (target <= {TARGET_PUSH_COMMANDS}: "
            f"{'met' if commands <= TARGET_PUSH_COMMANDS else 'NOT met'})"
        )
        targets.append(
            f"free-tier capacity {capacity:,.0f} generations a month in push mode (target >= "
            f"{TARGET_CAPACITY:,}: {'met' if capacity >= TARGET_CAPACITY else 'NOT met'})"
        )
    if rows:
        executions = max(e for _, e, _ in rows.values())
        targets.append(
            f"{executions:g} Inngest executions for {bundles} bundles (target <= bundles + 1 "
            f"= {bundles + 1}: {'met' if executions <= bundles + 1 else 'NOT met'})"
        )
    w("Issue 9's targets: " + "; ".join(targets) + ".")
    w("")
    return out


# ------------------------------------------------------------------------------ report


def report(
    args: argparse.Namespace,
    latency: LatencyResult,
    gens: list[Generation],
    modes: tuple[list[ModeRun], bool],
) -> str:
    out: list[str] = []
    w = out.append
    w("# tripkit pipeline benchmark")
    w("")
    w(f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- machine: {machine()}")
    w(f"- command: `{' '.join(['python bench/pipeline.py', *sys.argv[1:]])}`")
    w(
        "- stack: LocalStack(chunk_delay=0), each service its own process; the app in the "
        "production shape (an API process, worker processes); it reaches Redis through the "
        "Upstash-REST gateway; real HTTP on 127.0.0.1"
    )
    w("")

    w("## 1. Time to sessionId (client-side latency of POST /api/generate-bundles)")
    w("")
    w("bundleCount 1; one keep-alive HTTP client; milliseconds.")
    w("")
    w("| condition | requests | p50 | p90 | p99 | max |")
    w("| --- | ---: | ---: | ---: | ---: | ---: |")
    if latency.idle:
        w(latency_row("idle stack (each run finished before the next POST)", latency.idle))
    w(latency_row("back to back, earlier runs executing in the background", latency.loaded))
    w("")
    n = len(latency.loaded)
    w(f"The {n} back-to-back POSTs took {latency.post_seconds:.1f} s.")
    if latency.drain_seconds is not None:
        total = latency.post_seconds + latency.drain_seconds
        w(
            f"Their runs, executing meanwhile, all ended {latency.drain_seconds:.1f} s after the "
            f"last POST ({latency.drained} completed, {latency.failed} failed): {n} "
            f"one-bundle generations in {total:.1f} s, {n / total:.1f} per second end to end "
            f"with POSTs, runs and polls sharing {os.cpu_count()} CPUs."
        )
    else:
        w(
            f"The backlog did not finish within {args.drain_timeout:.0f} s "
            f"({latency.drained} completed, {latency.failed} failed)."
        )
    w("")
    busy = sum(latency.cpu.values())
    w("CPU seconds each service used over that phase (POSTs, runs, this script's polls):")
    w("")
    w("| service | CPU s | share |")
    w("| --- | ---: | ---: |")
    for name, seconds in sorted(latency.cpu.items(), key=lambda kv: -kv[1]):
        w(f"| {name} | {seconds:.1f} | {seconds / busy:.0%} |")
    w("")

    w(
        f"## 2. Redis commands per generation ({args.bundles} bundles, polled every "
        f"{args.poll_interval:g} s)"
    )
    w("")
    w(
        "Totals from INFO commandstats (what the server executed; Upstash bills each). The "
        "split is from MONITOR, command by command; worker reads = GETs - polls. "
        "Expected (tripkit/store.py): create 1, writes 1 running + 1 per summary + "
        "1 complete, each a SET inside one EVAL (billed as one more) followed by a "
        "PUBLISH, worker reads 0 (the start event carries what the first step needs), "
        "run record 1, polls = polls made."
    )
    w("")
    w(
        "| # | total | GET | SET | EVAL | PUBLISH | other | create | writes | publishes "
        "| worker reads "
        "| run record | polls | matches theory | duration (s) |"
    )
    w(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- | ---: |"
    )

    def other(g: Generation) -> int:
        return g.total - sum(g.stats.get(c, 0) for c in ("GET", "SET", "EVAL", "PUBLISH"))

    for n, g in enumerate(gens, 1):
        m = g.measured
        scripts = g.stats.get("EVAL", 0)
        ok = m == g.expected and g.writes == m["writes"] == scripts and other(g) == 0
        w(
            f"| {n} | {g.total} | {g.stats.get('GET', 0)} | {g.stats.get('SET', 0)} | "
            f"{scripts} | {g.stats.get('PUBLISH', 0)} | {other(g)} | "
            f"{m['create']} | {m['writes']} | {m['publishes']} | {m['worker reads']} | "
            f"{m['run record']} | {m['polls']} | "
            f"{'yes' if ok else 'NO: expected ' + str(g.expected)} | {g.duration:.2f} |"
        )
    mean = statistics.fmean
    fixed = mean([g.total - g.polls for g in gens])
    w(
        f"| mean | {mean([g.total for g in gens]):.1f} | "
        f"{mean([g.stats.get('GET', 0) for g in gens]):.1f} | "
        f"{mean([g.stats.get('SET', 0) for g in gens]):.1f} | "
        f"{mean([g.stats.get('EVAL', 0) for g in gens]):.1f} | "
        f"{mean([g.stats.get('PUBLISH', 0) for g in gens]):.1f} | "
        f"{mean([other(g) for g in gens]):.1f} | "
        f"{mean([g.measured['create'] for g in gens]):.1f} | "
        f"{mean([g.measured['writes'] for g in gens]):.1f} | "
        f"{mean([g.measured['publishes'] for g in gens]):.1f} | "
        f"{mean([g.worker_reads for g in gens]):.1f} | "
        f"{mean([g.measured['run record'] for g in gens]):.1f} | "
        f"{mean([g.polls for g in gens]):.1f} |  | {mean([g.duration for g in gens]):.2f} |"
    )
    w("")
    w(
        f"Without polls a {args.bundles}-bundle generation costs **{fixed:g} commands**; "
        "each poll adds 1."
    )
    w("")
    w(
        f"### Upstash cost of one {args.bundles}-bundle generation, polled every "
        f"{CLIENT_POLL_INTERVAL:g} s for its duration"
    )
    w("")
    w(
        f"Polls = ceil(duration / {CLIENT_POLL_INTERVAL:g}) + 1 (one right after the POST, the "
        "last one sees `completed`). Pay-as-you-go at "
        f"${UPSTASH_USD_PER_100K:.2f} per 100K commands; the free plan has "
        f"{UPSTASH_FREE_PER_MONTH:,} commands a month (upstash.com/pricing/redis)."
    )
    w("")
    w(
        "| generation | takes (s) | polls | commands | USD per generation | USD per 10,000 "
        "| generations/month in the free plan |"
    )
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    durations = [("offline stack, measured", mean([g.duration for g in gens]))]
    durations += [("projected (a real model)", d) for d in PROJECTED_DURATIONS]
    for label, seconds in durations:
        polls = math.ceil(seconds / CLIENT_POLL_INTERVAL) + 1
        commands = fixed + polls
        usd = commands * UPSTASH_USD_PER_100K / 100_000
        w(
            f"| {label} | {seconds:.1f} | {polls} | {commands:g} | ${usd:.7f} | "
            f"${usd * 10_000:.2f} | {int(UPSTASH_FREE_PER_MONTH // commands):,} |"
        )
    w("")

    w("## 3. Executor work per run")
    w("")
    w(
        "From `GET {INNGEST_BASE_URL}/v1/events/{sessionId}/runs`. SDK calls = HTTP requests "
        "from the executor to the app's /api/inngest; Inngest executions = 1 run + 1 per step "
        "(inngest.com/docs/durable-execution/limits)."
    )
    w("")
    w(
        "| # | status | SDK calls | steps | attempts per step | function errors "
        "| Inngest executions |"
    )
    w("| ---: | --- | ---: | ---: | --- | ---: | ---: |")
    for n, g in enumerate(gens, 1):
        run = g.run
        attempts = ", ".join(f"{s['name']} {s['attempts']}" for s in run["steps"])
        w(
            f"| {n} | {run['status']} | {run['sdk_calls']} | {run['step_count']} | {attempts} "
            f"| {run['function_errors']} | {1 + run['step_count']} |"
        )
    w("")
    w(
        f"Mean: {mean([g.run['sdk_calls'] for g in gens]):.1f} SDK calls, "
        f"{mean([g.run['step_count'] for g in gens]):.1f} steps, "
        f"{mean([1 + g.run['step_count'] for g in gens]):.1f} Inngest executions per "
        f"{args.bundles}-bundle generation."
    )
    w("")
    out += modes_report(args, *modes)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="loaded POSTs (default 100)")
    parser.add_argument("--idle-requests", type=int, default=100, help="idle POSTs (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted POSTs (default 5)")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="backlog wait (s)")
    parser.add_argument("--generations", type=int, default=5, help="detailed runs (default 5)")
    parser.add_argument("--bundles", type=int, default=3, help="bundles per detailed run")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="detailed runs' polls")
    parser.add_argument(
        "--mode-generations", type=int, default=2, help="push and poll runs each (default 2)"
    )
    parser.add_argument(
        "--mode-bundles", type=int, default=5, help="bundles in those (default 5: the original)"
    )
    parser.add_argument(
        "--workload-seconds",
        type=float,
        default=TYPICAL_DURATION_S,
        help="the original generation's duration, for the poll projection (default 360)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.md", help="Markdown file")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.generations < 1 or args.mode_generations < 1:
        parser.error("--requests, --generations and --mode-generations must be at least 1")

    latency = bench_time_to_session_id(
        args.requests, args.idle_requests, args.warmup, args.drain_timeout
    )
    generations = bench_generations(args.generations, args.bundles, args.poll_interval)
    print("[3/4] executor runs: read from the same generations")
    modes = bench_modes(args.mode_generations, args.mode_bundles)
    text = report(args, latency, generations, modes)
    print()
    print(text)
    write_section(args.out, "pipeline", text)
    print(f"\n(written to {args.out}, section 'pipeline')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
