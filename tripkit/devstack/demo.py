"""`tripkit demo`: the main job, end to end, on the offline stack.

Brings the stack up, requests bundles through the HTTP API like the original client,
follows them with a progress bar and each summary as it lands (polling every 2 s, or by
push with ``--push``), prints the bundles and the timings and the Redis commands used,
and tears everything down.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from tripkit.api_client import ApiClient
from tripkit.devstack.stack import LocalStack, StackConfig
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.events import FinalData, StatusData, SummaryData
from tripkit.models import SAMPLE_PREFERENCES, Bundle, Preferences, Session, Status, Summary


@dataclass
class DemoResult:
    session: Session
    seconds_to_session_id: float
    polls: int
    redis_commands: dict[str, int]


@dataclass
class PushResult:
    """A generation followed by push, timed on the client's clock."""

    session_id: str
    final: FinalData
    seconds_to_session_id: float
    seconds_to_first_summary: float | None
    seconds_to_end: float
    events: int
    reconnects: int


def progress_bar(done: int, total: int, width: int = 24) -> str:
    filled = round(width * done / total) if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


async def run_generation(
    api_url: str,
    preferences: Preferences,
    *,
    poll_interval: float,
    out: TextIO,
    timeout: float = 600.0,
) -> tuple[Session, float, int]:
    """Request bundles and follow them to the end, printing as the original UI would."""
    async with ApiClient(api_url) as api:
        started = time.perf_counter()
        session_id = await api.request_bundles(preferences)
        to_id = time.perf_counter() - started
        print(
            f"sessionId {session_id} in {to_id * 1000:.0f} ms; polling every {poll_interval:g} s",
            file=out,
        )
        shown: set[int] = set()
        final: Session | None = None
        async for session in api.watch(session_id, interval=poll_interval, timeout=timeout):
            for summary in session.summaries:
                if summary.index not in shown:
                    shown.add(summary.index)
                    _print_summary(summary, out)
            bar = progress_bar(session.progress.done, session.progress.total)
            print(f"  {bar}  {session.status.value}", file=out, flush=True)
            final = session
        assert final is not None
        return final, to_id, api.polls


def _print_summary(summary: Summary, out: TextIO) -> None:
    print(f"\n  #{summary.index + 1} {summary.title} ({summary.destination})", file=out)
    print(f"     {summary.text}", file=out)


async def follow_generation(
    api_url: str, preferences: Preferences, *, out: TextIO, timeout: float = 600.0
) -> PushResult:
    """Request bundles and follow them by push, printing each event as it arrives."""
    async with ApiClient(api_url) as api:
        started = time.perf_counter()
        session_id = await api.request_bundles(preferences)
        to_id = time.perf_counter() - started
        print(
            f"sessionId {session_id} in {to_id * 1000:.0f} ms; following by push "
            f"(GET /api/session/{session_id}/events)",
            file=out,
        )
        first_summary: float | None = None
        final: FinalData | None = None
        count = 0
        async with asyncio.timeout(timeout):
            async for event in api.follow(session_id):
                count += 1
                data = event.data
                if isinstance(data, StatusData):
                    print(f"  [id {event.id}] {data.status.value}", file=out, flush=True)
                elif isinstance(data, SummaryData):
                    if first_summary is None:
                        first_summary = time.perf_counter() - started
                    _print_summary(data.summary, out)
                    bar = progress_bar(data.progress.done, data.progress.total)
                    print(f"  [id {event.id}] {bar}", file=out, flush=True)
                elif isinstance(data, FinalData):
                    final = data
                    print(f"  [id {event.id}] {event.event}", file=out, flush=True)
        assert final is not None  # follow() ends only after the final event
        return PushResult(
            session_id,
            final,
            to_id,
            first_summary,
            time.perf_counter() - started,
            count,
            api.reconnects,
        )


def print_bundles(bundles: list[Bundle], out: TextIO) -> None:
    rows = [("#", "bundle", "destination", "nights", "cost")]
    for b in bundles:
        rows.append(
            (
                str(b.index + 1),
                b.title,
                f"{b.destination}, {b.country}".strip(", "),
                str(b.nights),
                f"{b.estimated_cost:,.0f} {b.currency}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)), file=out
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths), file=out)


def print_timings(result: DemoResult, out: TextIO) -> None:
    s = result.session
    print("\nTimings", file=out)
    print(f"  time to sessionId      {result.seconds_to_session_id * 1000:8.0f} ms", file=out)
    if s.first_summary_at is not None:
        first = (s.first_summary_at - s.created_at).total_seconds()
        print(f"  time to first summary  {first:8.1f} s", file=out)
    if s.completed_at is not None:
        print(
            f"  time to completion     {(s.completed_at - s.created_at).total_seconds():8.1f} s",
            file=out,
        )
    total = sum(result.redis_commands.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(result.redis_commands.items()))
    print(f"\nRedis commands: {total} ({detail}); polls: {result.polls}", file=out)


def print_push_timings(result: PushResult, commands: dict[str, int], out: TextIO) -> None:
    print("\nTimings (on this client's clock)", file=out)
    print(f"  time to sessionId      {result.seconds_to_session_id * 1000:8.0f} ms", file=out)
    if result.seconds_to_first_summary is not None:
        print(f"  time to first summary  {result.seconds_to_first_summary:8.1f} s", file=out)
    print(f"  time to the last event {result.seconds_to_end:8.1f} s", file=out)
    total = sum(commands.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(commands.items()))
    print(
        f"\nRedis commands: {total} ({detail}); push events: {result.events}, "
        f"reconnects: {result.reconnects}",
        file=out,
    )


def run_demo(
    *,
    poll_interval: float = 2.0,
    chunk_delay: float = 0.02,
    push: bool = False,
    preferences: Preferences = SAMPLE_PREFERENCES,
    out: TextIO = sys.stdout,
) -> int:
    """Run the whole demo; returns the exit status (0 when the generation completed).
    ``push``: follow the generation by push instead of polling."""
    print(
        "Starting the offline stack (Redis, REST gateway, executor, model server, app)...",
        file=out,
        flush=True,
    )
    with LocalStack(StackConfig(chunk_delay=chunk_delay)) as stack:
        print(f"  app at {stack.api_url}; Redis is {stack.redis_version}\n", file=out)
        counter = RedisCommandCounter(stack.redis_url)
        counter.reset()
        if push:
            pushed = asyncio.run(follow_generation(stack.api_url, preferences, out=out))
            commands = counter.settled()
            counter.close()
            print("", file=out)
            if pushed.final.status is Status.COMPLETED:
                print_bundles(pushed.final.bundles, out)
            else:
                print(f"The generation failed: {pushed.final.error}", file=out)
            print_push_timings(pushed, commands, out)
            print("\nStopping the stack.", file=out)
            return 0 if pushed.final.status is Status.COMPLETED else 1
        session, to_id, polls = asyncio.run(
            run_generation(stack.api_url, preferences, poll_interval=poll_interval, out=out)
        )
        result = DemoResult(session, to_id, polls, counter.counts())
        counter.close()
        print("", file=out)
        if session.status is Status.COMPLETED:
            print_bundles(session.bundles, out)
        else:
            print(f"The generation failed: {session.error}", file=out)
        print_timings(result, out)
        print("\nStopping the stack.", file=out)
    return 0 if session.status is Status.COMPLETED else 1
