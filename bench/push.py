"""Push clients held by one app process, and the Redis connections it takes to hold them.

Not a test: run it by hand (``.venv/bin/python bench/push.py``; ``make bench`` runs it).
For each Redis transport (the app reaching Redis through the Upstash-REST gateway, then
over RESP) it starts a fresh :class:`tripkit.devstack.stack.LocalStack` in the production
shape and, against its one API process:

1. creates ``--sessions`` sessions (default 200) through tripkit's own
   :class:`~tripkit.store.SessionStore`, as ``POST /api/generate-bundles`` creates them,
   but without an Inngest event, so no run moves them on while the clients connect;
2. opens ``--clients`` push clients (default 200; aiohttp, one process) on
   ``GET /api/session/{id}/events``, all at once, spread evenly over the sessions; a
   client answered 503 connects again after its ``Retry-After``, resuming from its last id;
3. once every client has its first event (its replay), reads who holds each Redis
   connection (``CLIENT LIST``, each matched to a process by its TCP port), the API
   process's HTTP connections to the REST gateway, and the commands Redis ran meanwhile;
4. drives every session to its end through the store, with the worker's own writes
   (running, one summary, completed; each announced to push clients), and checks that
   every client saw every event exactly once and its final one.

On a build without the push route (404 for an existing session) it says so and exits 0.
Prints Markdown and writes bench/results.md (section ``push``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import httpx
from shared import (
    EVENTS_PATH,
    NO_PUSH,
    SseParser,
    machine,
    percentile,
    preferences,
    push_route_status,
    redis_clients_by_owner,
    service_pids,
    tcp_peers,
    write_section,
)

from tripkit.devstack.stack import LocalStack, StackConfig
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.models import Bundle, Preferences, Session, Summary
from tripkit.store import SessionStore
from tripkit.transport.resp import RespTransport

HERE = Path(__file__).resolve().parent
Transport = Literal["rest", "resp"]
TRANSPORTS: tuple[Transport, ...] = ("rest", "resp")
BENCH = "bench (sessions, writes)"
#: Events of a one-bundle session from creation to the end: queued, running, the
#: summary, completed.
EXPECTED_EVENTS = ["status", "status", "summary", "completed"]


@dataclass
class Client:
    """What one push client saw."""

    session_id: str
    ids: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    connects: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # HTTP status or exception
    first_event_at: float | None = None  # monotonic
    ended_at: float | None = None

    @property
    def got_final(self) -> bool:
        return bool(self.names) and self.names[-1] not in ("status", "summary")

    @property
    def exact(self) -> bool:
        """Every event once, in order, ending with the final one."""
        return self.names == EXPECTED_EVENTS and self.ids == sorted(set(self.ids))


async def follow(http: aiohttp.ClientSession, url: str, client: Client, attempts: int) -> None:
    """Follow one session to its final event, as EventSource would: on a refusal or a
    cut stream, wait and connect again with ``Last-Event-ID``."""
    for _ in range(attempts):
        headers = {"Last-Event-ID": str(client.ids[-1])} if client.ids else {}
        client.connects += 1
        delay = 0.5
        try:
            async with http.get(url, headers=headers) as response:
                if response.status == 204:  # it had the final event already
                    break
                if response.status != 200:
                    client.refused[str(response.status)] += 1
                    delay = float(response.headers.get("Retry-After", delay))
                else:
                    parser = SseParser()
                    async for raw in response.content:
                        event = parser.feed(raw.decode())
                        if event is None:
                            continue
                        client.ids.append(int(event.id))
                        client.names.append(event.event)
                        if client.first_event_at is None:
                            client.first_event_at = time.monotonic()
                        if client.got_final:
                            break
                    if client.got_final:
                        break
        except (aiohttp.ClientError, TimeoutError) as exc:
            client.refused[type(exc).__name__] += 1
        await asyncio.sleep(delay)
    client.ended_at = time.monotonic()


@dataclass
class Snapshot:
    """Who held Redis connections, and the API process's connections to the gateway."""

    redis: dict[str, dict[str, int]]
    api_to_gateway: int
    api_streams: int  # established connections of push clients to the API process
    hub: dict[str, Any]

    def connections(self, owner: str) -> int:
        return self.redis.get(owner, {}).get("connections", 0)

    def subscribers(self, owner: str) -> int:
        return self.redis.get(owner, {}).get("subscribers", 0)

    @property
    def total(self) -> int:
        return sum(v["connections"] for v in self.redis.values())


def snapshot(stack: LocalStack) -> Snapshot:
    api_pids = service_pids(stack)["api"]
    gateway_port = int(stack.rest_url.rsplit(":", 1)[1].split("/", 1)[0])
    api_port = int(stack.api_url.rsplit(":", 1)[1])
    streams = tcp_peers({os.getpid()}, api_port)
    health = httpx.get(f"{stack.api_url}/healthz", timeout=10).json()
    return Snapshot(
        redis_clients_by_owner(stack, stack.redis_url, {BENCH: {os.getpid()}}),
        len(tcp_peers(api_pids, gateway_port)),
        len(streams),
        dict(health.get("push") or {}),
    )


@dataclass
class Result:
    transport: str
    available: bool
    clients: list[Client] = field(default_factory=list)
    sessions: int = 0
    started: float = math.nan  # monotonic: the clients start connecting
    connect_seconds: float = math.nan  # first connect to the last client's first event
    deliver_seconds: float = math.nan  # the first end write to the last client's end
    held_at_once: int = 0
    before: Snapshot | None = None
    held: Snapshot | None = None
    after: Snapshot | None = None
    connect_commands: dict[str, int] = field(default_factory=dict)
    end_commands: dict[str, int] = field(default_factory=dict)

    @property
    def first_events(self) -> list[float]:
        return [c.first_event_at - self.started for c in self.clients if c.first_event_at]


async def finish(store: SessionStore, session: Session) -> None:
    """The worker's writes to a one-bundle session, each announced to push clients."""
    running = await store.mark_running(session)
    summary = Summary(index=0, title="Trip 1", destination="Porto", text="Three days in Porto.")
    written = await store.add_summary(running, summary)
    bundle = Bundle(index=0, title="Trip 1", destination="Porto", nights=2, estimated_cost=900)
    await store.complete(written, [bundle])


async def bench_transport(args: argparse.Namespace, transport: Transport) -> Result:
    print(f"[{transport}] stack up; {args.sessions} sessions, {args.clients} push clients")
    config = StackConfig(chunk_delay=0, redis_transport=transport, workers=1)
    with LocalStack(config) as stack:
        store = SessionStore(RespTransport(stack.redis_url))
        try:
            return await _measure(args, transport, stack, store)
        finally:
            await store.aclose()


async def _measure(
    args: argparse.Namespace, transport: str, stack: LocalStack, store: SessionStore
) -> Result:
    prefs = Preferences.model_validate(preferences(1))
    made = [await store.create(prefs) for _ in range(args.sessions)]
    status = await asyncio.to_thread(push_route_status, stack.api_url, made[0].session_id)
    if status == 404:
        print(f"      {NO_PUSH} (the events route answered 404 for an existing session)")
        return Result(transport, available=False)
    if status not in (200, 204):
        raise SystemExit(f"the push route answered {status} for a queued session")
    result = Result(transport, available=True, sessions=len(made))
    await asyncio.sleep(0.5)  # the probe's listener leaves the hub
    result.before = await asyncio.to_thread(snapshot, stack)
    counter = RedisCommandCounter(stack.redis_url)
    clients = [Client(made[n % len(made)].session_id) for n in range(args.clients)]
    result.clients = clients
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        counter.reset()
        started = result.started = time.monotonic()
        tasks = [
            asyncio.create_task(
                follow(http, stack.api_url + EVENTS_PATH.format(session_id=c.session_id), c, 20)
            )
            for c in clients
        ]
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            if all(c.first_event_at is not None or c.ended_at is not None for c in clients):
                break
            await asyncio.sleep(0.05)
        result.connect_seconds = time.monotonic() - started
        await asyncio.sleep(0.5)  # let the last replay GETs land
        result.connect_commands = counter.counts()  # before the snapshot's own commands
        result.held = await asyncio.to_thread(snapshot, stack)
        result.held_at_once = result.held.api_streams
        print(
            f"      {result.held_at_once} streams held; Redis connections: "
            f"{result.held.total} in all"
        )

        counter.reset()
        ended = time.monotonic()
        for start in range(0, len(made), 20):
            await asyncio.gather(*(finish(store, s) for s in made[start : start + 20]))
        _, pending = await asyncio.wait(tasks, timeout=args.timeout)
        for task in pending:
            task.cancel()
        finals = [c.ended_at for c in clients if c.ended_at is not None]
        result.deliver_seconds = max(finals) - ended if finals else math.nan
        result.end_commands = counter.counts()
    counter.close()
    await asyncio.sleep(1.0)  # the hub lets its subscription go with the last client
    result.after = await asyncio.to_thread(snapshot, stack)
    got = sum(c.got_final for c in clients)
    print(f"      {got}/{len(clients)} clients got their final event")
    return result


# ------------------------------------------------------------------------------ report


def report(args: argparse.Namespace, results: list[Result]) -> str:
    out: list[str] = []
    w = out.append
    w("# Push clients on one app process")
    w("")
    w(f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- machine: {machine()}")
    w(f"- command: `{' '.join(['python bench/push.py', *sys.argv[1:]])}`")
    w(
        "- stack: LocalStack, production shape (one API process, one worker process), "
        "REST gateway, Redis; a fresh stack per transport"
    )
    w(
        f"- load: {args.clients} push clients (aiohttp, one process) connecting at once to "
        f"`GET /api/session/{{id}}/events` of {args.sessions} one-bundle sessions, created "
        "and then driven to their end (running, a summary, completed) by this script "
        "through tripkit's SessionStore, so every client is held until all are connected"
    )
    w("")
    missing = [r.transport for r in results if not r.available]
    if missing:
        w(f"**{NO_PUSH}** ({', '.join(missing)}): the events route answered 404.")
        w("")
    shown = [r for r in results if r.available]
    if not shown:
        return "\n".join(out)
    head = " | ".join(r.transport.upper() for r in shown)
    w(f"| | {head} |")
    w("| --- |" + " ---: |" * len(shown))

    def row(label: str, cells: list[object]) -> None:
        w(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")

    def snap(r: Result) -> tuple[Snapshot, Snapshot, Snapshot]:
        assert r.before and r.held and r.after
        return r.before, r.held, r.after

    row("push clients", [len(r.clients) for r in shown])
    row("sessions followed", [r.sessions for r in shown])
    row("streams held open at once (TCP, client side)", [r.held_at_once for r in shown])
    row("hub listeners while held (`/healthz`)", [snap(r)[1].hub.get("listeners") for r in shown])
    row("clients that got their final event", [sum(c.got_final for c in r.clients) for r in shown])
    row(
        "clients that saw every event exactly once, in order",
        [sum(c.exact for c in r.clients) for r in shown],
    )
    row(
        "connects refused or cut (then retried)",
        [
            ", ".join(
                f"{k} x{v}" for k, v in sum((c.refused for c in r.clients), Counter()).items()
            )
            or "0"
            for r in shown
        ],
    )
    row("all clients connected (s)", [f"{r.connect_seconds:.1f}" for r in shown])
    row(
        "first event (the replay), from the first connect, p50 / p99 (s)",
        [
            f"{percentile(r.first_events, 50):.2f} / {percentile(r.first_events, 99):.2f}"
            for r in shown
        ],
    )
    row(
        "all finals delivered after the end writes began (s)",
        [f"{r.deliver_seconds:.1f}" for r in shown],
    )
    row("**Redis connections, all, while held**", [f"**{snap(r)[1].total}**" for r in shown])
    row(
        "  the app's (API process over RESP, gateway over REST) before / held / after",
        [
            " / ".join(str(x.connections("api") + x.connections("rest-gateway")) for x in snap(r))
            for r in shown
        ],
    )
    row(
        "  the API process's (RESP: its pool and subscription)",
        [snap(r)[1].connections("api") for r in shown],
    )
    row(
        "  the REST gateway's (for the API process, over REST)",
        [snap(r)[1].connections("rest-gateway") for r in shown],
    )
    row(
        "  the worker's, this script's, other",
        [
            f"{snap(r)[1].connections('worker-1')}, "
            f"{snap(r)[1].connections(BENCH) + snap(r)[1].connections('this measurement')}, "
            f"{snap(r)[1].connections('other')}"
            for r in shown
        ],
    )
    row(
        "  subscriber connections (API + gateway)",
        [snap(r)[1].subscribers("api") + snap(r)[1].subscribers("rest-gateway") for r in shown],
    )
    row(
        "API process's HTTP connections to the gateway, while held",
        [snap(r)[1].api_to_gateway for r in shown],
    )
    row(
        "  before / after",
        [f"{snap(r)[0].api_to_gateway} / {snap(r)[2].api_to_gateway}" for r in shown],
    )
    row(
        "Redis commands while the clients connected",
        [", ".join(f"{k} {v}" for k, v in sorted(r.connect_commands.items())) for r in shown],
    )
    row(
        "Redis commands driving the sessions to their end",
        [", ".join(f"{k} {v}" for k, v in sorted(r.end_commands.items())) for r in shown],
    )
    w("")
    w(
        "Connections are Redis's `CLIENT LIST`, each matched to the process holding its "
        "other end by TCP port (psutil). Over RESP the API process talks to Redis itself: "
        "its command pool (bounded by `TRIPKIT_REDIS_MAX_CONNECTIONS`) plus the one shared "
        "subscription. Over REST the API process holds no Redis connection: it holds HTTP "
        "connections to the gateway (Upstash in production), one of them the subscribe "
        "stream, and the gateway holds the Redis connections, one per subscribe stream plus "
        "its own command pool; both sides are shown."
    )
    w("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="push clients (default 200)")
    parser.add_argument(
        "--sessions", type=int, default=200, help="sessions they follow (default 200: one each)"
    )
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help="how the app reaches Redis: rest, resp or both (default rest,resp)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase (s, default 120)")
    parser.add_argument("--out", type=Path, default=HERE / "results.md", help="Markdown file")
    args = parser.parse_args(argv)
    named = [t.strip() for t in args.transports.split(",") if t.strip()]
    transports = [t for t in TRANSPORTS if t in named]
    if not named or len(transports) != len(set(named)):
        parser.error("--transports takes rest, resp or rest,resp")
    if args.clients < 1 or args.sessions < 1:
        parser.error("--clients and --sessions must be at least 1")
    results = [asyncio.run(bench_transport(args, t)) for t in transports]
    text = report(args, results)
    print()
    print(text)
    write_section(args.out, "push", text)
    print(f"\n(written to {args.out}, section 'push')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
