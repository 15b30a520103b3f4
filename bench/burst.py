"""A burst of generations requested at once, each followed by its own polling client.

Not a test: run it by hand (``make bench``, or ``.venv/bin/python bench/burst.py``). For
each transport (the app reaching Redis through the Upstash-REST gateway, as it reaches
Upstash in production, and over RESP) it starts a fresh
:class:`tripkit.devstack.stack.LocalStack` in the production shape (an API process, and
worker processes at a lower CPU priority), then N clients (default 200) each POST one
generation at the same moment and poll it every second until it ends. It reports:

- what became of them: completed, failed, never ended, sessions with a duplicated
  summary or more than one run (from the executor), POSTs refused;
- POST latency and time to the first summary (p50 / p99), the wall time of the burst;
- backpressure: the most runs waiting for a concurrency slot at once (from the
  executor), and how many sessions a poll saw ``queued``;
- CPU seconds each service used over the burst (the load generator's own too);
- recovery: how long the first poll after the burst took, and how long until polls
  answered in under 100 ms five times in a row.

Clients use aiohttp: on 2 cores an httpx load generator with 200 clients burns more CPU
than the app it measures. Results go to bench/results.md (section ``burst``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
from shared import cpu_seconds, machine, percentile, preferences, write_section

from tripkit.devstack.stack import LocalStack, StackConfig

HERE = Path(__file__).resolve().parent
NORMAL_MS = 100.0  # a poll answered faster than this counts as "normal"


@dataclass
class Outcome:
    """What one client saw."""

    post_status: int = 0
    post_seconds: float = math.nan
    session_id: str | None = None
    first_summary: float | None = None  # seconds from the POST to the first summary seen
    final: str = "never ended"
    ended_at: float | None = None  # monotonic
    polls: int = 0
    poll_errors: Counter[str] = field(default_factory=Counter)  # HTTP status or exception
    saw_queued: bool = False
    duplicated_summary: bool = False
    summaries: int = 0


async def follow(
    http: aiohttp.ClientSession, api: str, bundles: int, interval: float, deadline: float
) -> Outcome:
    """POST one generation, then poll it every ``interval`` s until it ends."""
    out = Outcome()
    started = time.monotonic()
    try:
        async with http.post(f"{api}/api/generate-bundles", json=preferences(bundles)) as resp:
            out.post_status = resp.status
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError):
        out.post_status = -1
        return out
    out.post_seconds = time.monotonic() - started
    if out.post_status != 202:
        return out
    out.session_id = body["sessionId"]
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        out.polls += 1
        try:
            async with http.get(f"{api}/api/session/{out.session_id}") as resp:
                if resp.status != 200:
                    out.poll_errors[f"HTTP {resp.status}"] += 1
                    continue
                session = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            out.poll_errors[type(exc).__name__] += 1
            continue
        out.saw_queued |= session["status"] == "queued"
        indices = [s["index"] for s in session["summaries"]]
        out.duplicated_summary |= len(indices) != len(set(indices))
        out.summaries = len(indices)
        if indices and out.first_summary is None:
            out.first_summary = time.monotonic() - started
        if session["status"] in ("completed", "failed"):
            out.final = session["status"]
            out.ended_at = time.monotonic()
            return out
    return out


async def watch_queues(http: aiohttp.ClientSession, inngest_url: str, most: list[int]) -> None:
    """Record the most runs waiting for a concurrency slot at once (sampled every 0.5 s)."""
    while True:
        try:
            async with http.get(f"{inngest_url}/_control/queues") as resp:
                queues = (await resp.json())["data"]
            most[0] = max([most[0], *(q["waiting"] for q in queues.values())])
        except (aiohttp.ClientError, TimeoutError, KeyError):
            pass
        await asyncio.sleep(0.5)


async def recovery(http: aiohttp.ClientSession, api: str, session_id: str) -> tuple[float, float]:
    """The first poll's latency (ms) and the seconds until five polls in a row answered in
    under NORMAL_MS, starting right after the burst."""
    started = time.monotonic()
    first: float | None = None
    streak_since: float | None = None
    streak = 0
    while time.monotonic() - started < 120:
        sent = time.monotonic()
        async with http.get(f"{api}/api/session/{session_id}") as resp:
            await resp.read()
            ok = resp.status == 200
        ms = (time.monotonic() - sent) * 1000
        first = ms if first is None else first
        if ok and ms < NORMAL_MS:
            streak_since = sent if streak == 0 else streak_since
            streak += 1
        else:
            streak = 0
        if streak == 5 and streak_since is not None:
            return first, streak_since - started
        await asyncio.sleep(0.05)
    return first if first is not None else math.nan, math.inf


async def runs_per_session(
    http: aiohttp.ClientSession, inngest_url: str, ids: list[str]
) -> Counter[int]:
    """How many runs the executor started per session (1 is right)."""
    counts: Counter[int] = Counter()
    for session_id in ids:
        async with http.get(f"{inngest_url}/v1/events/{session_id}/runs") as resp:
            runs = (await resp.json())["data"]
        counts[len([r for r in runs if r["function_id"].endswith("generate-bundles")])] += 1
    return counts


@dataclass
class Result:
    transport: str
    n: int
    outcomes: list[Outcome]
    wall: float
    cpu: dict[str, float]
    loadgen_cpu: float
    most_waiting: int
    runs: Counter[int]
    first_poll_ms: float
    normal_after: float
    workers: int
    concurrency: str


async def burst(stack: LocalStack, args: argparse.Namespace, transport: str) -> Result:
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a poll never
    # goes out on a connection the server is closing (a client-side race, not the app's).
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # Warm up (imports, connections): one generation, not counted.
        warm = await follow(http, stack.api_url, 1, 0.2, time.monotonic() + 120)
        if warm.final != "completed":
            raise RuntimeError(f"the warm-up generation ended {warm.final}")
        most = [0]
        watcher = asyncio.create_task(watch_queues(http, stack.inngest_url, most))
        before, cpu0 = cpu_seconds(stack), time.process_time()
        started = time.monotonic()
        deadline = started + args.timeout
        print(f"[{transport}] {args.generations} generations requested at once ...", flush=True)
        outcomes = await asyncio.gather(
            *(
                follow(http, stack.api_url, args.bundles, args.poll_interval, deadline)
                for _ in range(args.generations)
            )
        )
        ends = [o.ended_at for o in outcomes if o.ended_at is not None]
        wall = (max(ends) if ends else time.monotonic()) - started
        after, cpu1 = cpu_seconds(stack), time.process_time()
        watcher.cancel()
        done = [o for o in outcomes if o.final == "completed" and o.session_id]
        first_ms, normal_after = (
            await recovery(http, stack.api_url, done[-1].session_id)  # type: ignore[arg-type]
            if done
            else (math.nan, math.nan)
        )
        ids = [o.session_id for o in outcomes if o.session_id is not None]
        runs = await runs_per_session(http, stack.inngest_url, ids)
    return Result(
        transport=transport,
        n=args.generations,
        outcomes=list(outcomes),
        wall=wall,
        cpu={name: after[name] - before.get(name, 0.0) for name in after},
        loadgen_cpu=cpu1 - cpu0,
        most_waiting=most[0],
        runs=runs,
        first_poll_ms=first_ms,
        normal_after=normal_after,
        workers=stack.config.workers,
        concurrency=stack.app_env("worker").get("TRIPKIT_GENERATION_CONCURRENCY", "10 (default)"),
    )


def run(args: argparse.Namespace, transport: Literal["rest", "resp"]) -> Result:
    config = StackConfig(chunk_delay=args.chunk_delay, redis_transport=transport)
    if args.concurrency:
        config.extra_app_env["TRIPKIT_GENERATION_CONCURRENCY"] = str(args.concurrency)
    with LocalStack(config) as stack:
        result = asyncio.run(burst(stack, args, transport))
    summary(result)
    return result


def summary(r: Result) -> None:
    finals = Counter(o.final for o in r.outcomes)
    posts = [o.post_seconds for o in r.outcomes if o.post_status == 202]
    print(
        f"[{r.transport}] {dict(finals)} in {r.wall:.0f} s; POST p99 "
        f"{percentile(posts, 99) * 1000:.0f} ms; first poll after {r.first_poll_ms:.0f} ms",
        flush=True,
    )


def report(args: argparse.Namespace, results: list[Result]) -> str:
    out: list[str] = []
    w = out.append
    w("# Burst: generations requested at once")
    w("")
    w(f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- machine: {machine()}")
    w(f"- command: `{' '.join(['python bench/burst.py', *sys.argv[1:]])}`")
    r0 = results[0]
    w(
        f"- stack: LocalStack, production shape: 1 API process, {r0.workers} worker processes "
        f"(nice +10) sharing one socket, executor, model server (chunk delay "
        f"{args.chunk_delay:g} s), Redis, REST gateway; generation concurrency "
        f"{r0.concurrency}"
    )
    w(
        f"- load: {args.generations} clients, each POSTs one {args.bundles}-bundle generation "
        f"at the same moment, then polls it every {args.poll_interval:g} s until it ends "
        f"(aiohttp, one process)"
    )
    w("")
    w("| | " + " | ".join(r.transport.upper() for r in results) + " |")
    w("| --- | " + " | ".join("---:" for _ in results) + " |")

    def row(label: str, cell: Any) -> None:
        w(f"| {label} | " + " | ".join(str(cell(r)) for r in results) + " |")

    def count(r: Result, final: str) -> int:
        return sum(1 for o in r.outcomes if o.final == final)

    def posts(r: Result) -> list[float]:
        return [o.post_seconds * 1000 for o in r.outcomes if o.post_status == 202]

    def poll_errors(r: Result) -> str:
        errors: Counter[str] = sum((o.poll_errors for o in r.outcomes), Counter())
        if not errors:
            return "0"
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(errors.items()))
        return f"{sum(errors.values())} ({kinds})"

    def firsts(r: Result) -> list[float]:
        return [o.first_summary for o in r.outcomes if o.first_summary is not None]

    row("requested", lambda r: r.n)
    row("POSTs refused (not 202)", lambda r: sum(1 for o in r.outcomes if o.post_status != 202))
    row("completed", lambda r: count(r, "completed"))
    row("failed", lambda r: count(r, "failed"))
    row("never ended (lost)", lambda r: count(r, "never ended"))
    row(
        "sessions with a duplicated summary",
        lambda r: sum(o.duplicated_summary for o in r.outcomes),
    )
    row(
        "sessions with more than one run",
        lambda r: sum(v for k, v in r.runs.items() if k > 1),
    )
    row("POST latency p50 (ms)", lambda r: f"{percentile(posts(r), 50):.0f}")
    row("POST latency p99 (ms)", lambda r: f"{percentile(posts(r), 99):.0f}")
    row("POST latency max (ms)", lambda r: f"{max(posts(r), default=math.nan):.0f}")
    row("time to first summary p50 (s)", lambda r: f"{percentile(firsts(r), 50):.1f}")
    row("time to first summary p99 (s)", lambda r: f"{percentile(firsts(r), 99):.1f}")
    row("wall time, first POST to last end (s)", lambda r: f"{r.wall:.0f}")
    row("sessions a poll saw `queued`", lambda r: sum(o.saw_queued for o in r.outcomes))
    row("most runs waiting for a slot at once", lambda r: r.most_waiting)
    row("polls made", lambda r: sum(o.polls for o in r.outcomes))
    row("polls not answered 200", poll_errors)
    row("first poll after the burst (ms)", lambda r: f"{r.first_poll_ms:.1f}")
    row(
        f"until 5 polls in a row under {NORMAL_MS:.0f} ms (s)",
        lambda r: f"{r.normal_after:.2f}",
    )
    w("")
    w("CPU seconds over the burst, per process (children included):")
    w("")
    names = sorted({name for r in results for name in r.cpu}, key=lambda n: n)
    w("| process | " + " | ".join(r.transport.upper() for r in results) + " |")
    w("| --- | " + " | ".join("---:" for _ in results) + " |")
    for name in names:
        w(f"| {name} | " + " | ".join(f"{r.cpu.get(name, 0.0):.1f}" for r in results) + " |")
    w("| load generator | " + " | ".join(f"{r.loadgen_cpu:.1f}" for r in results) + " |")
    w("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=200, help="clients (default 200)")
    parser.add_argument("--bundles", type=int, default=3, help="bundles each (default 3)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--chunk-delay", type=float, default=0.01, help="model pace (s)")
    parser.add_argument(
        "--transports", default="rest,resp", help="comma-separated: rest, resp (default both)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="TRIPKIT_GENERATION_CONCURRENCY"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    parser.add_argument("--out", type=Path, default=HERE / "results.md", help="Markdown file")
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not transports or any(t not in ("rest", "resp") for t in transports):
        parser.error("--transports takes rest, resp or both")
    if args.generations < 1:
        parser.error("--generations must be at least 1")
    results = [run(args, cast(Literal["rest", "resp"], t)) for t in transports]
    text = report(args, results)
    print()
    print(text)
    write_section(args.out, "burst", text)
    print(f"\n(written to {args.out}, section 'burst')")
    failed = any(
        o.final != "completed" or o.post_status != 202 for r in results for o in r.outcomes
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
