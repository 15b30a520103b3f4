"""What the benchmarks share: the request they send, percentiles, the CPU time of the
stack's processes, the machine they ran on, their sections of bench/results.md (each
script rewrites only its own), and for push: a server-sent-events parser, the probe for
the push route, and who holds each Redis connection."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from tripkit import __version__
from tripkit.devstack.stack import LocalStack


def preferences(bundles: int) -> dict[str, Any]:
    """The generation request both benchmarks send (camelCase, as the API takes it)."""
    return {
        "interests": ["food", "museums"],
        "tripLengthDays": 3,
        "budget": 1500,
        "bundleCount": bundles,
    }


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def cpu_seconds(stack: LocalStack) -> dict[str, float]:
    """CPU time (user + system) used so far by each service process and its children."""
    used = {}
    for name, service in stack.services.items():
        if service.proc is None:
            continue
        try:
            proc = psutil.Process(service.proc.pid)
            procs = [proc, *proc.children(recursive=True)]
            used[name] = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
        except psutil.Error:
            used[name] = math.nan
    return used


def machine() -> str:
    """What the numbers were measured on."""
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"nproc {os.cpu_count()}, Python {platform.python_version()}, tripkit {__version__}"
    )


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the section ``name`` of ``path`` (between its markers) with ``text``,
    or append it; the other sections are left as they are."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        before, rest = old.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + block + ("\n" + after if after else "")
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    path.write_text(new)


# ------------------------------------------------------------------------------ push


#: The push route of issue 9; a build without it answers 404 for an existing session.
EVENTS_PATH = "/api/session/{session_id}/events"
NO_PUSH = "push: not available on this build"


@dataclass
class SseEvent:
    """One server-sent event as a client dispatches it (``id:``, ``event:``, ``data:``)."""

    id: str
    event: str
    data: str


class SseParser:
    """The SSE line format, fed one line at a time (comments and keep-alives dropped;
    an event without data is not dispatched, as the spec says)."""

    def __init__(self) -> None:
        self._id = ""
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            event = None
            if self._data:
                event = SseEvent(self._id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def push_route_status(api_url: str, session_id: str) -> int:
    """The status the push route answers for an existing session (the stream is closed at
    once): 200 or 204 where push is built, 404 on a build without the route."""
    with httpx.stream("GET", api_url + EVENTS_PATH.format(session_id=session_id)) as response:
        return response.status_code


def service_pids(stack: LocalStack) -> dict[str, set[int]]:
    """Each service's process and its children, by service name."""
    pids: dict[str, set[int]] = {}
    for name, service in stack.services.items():
        if service.proc is None:
            continue
        try:
            proc = psutil.Process(service.proc.pid)
            pids[name] = {proc.pid, *(child.pid for child in proc.children(recursive=True))}
        except psutil.Error:
            continue
    return pids


def tcp_peers(pids: set[int], remote_port: int) -> list[tuple[int, str]]:
    """The established TCP connections of ``pids`` to 127.0.0.1:``remote_port``, as
    (local port, status)."""
    out = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for conn in conns:
            if conn.raddr and conn.raddr.port == remote_port and conn.status == "ESTABLISHED":
                out.append((conn.laddr.port, conn.status))
    return out


def redis_clients_by_owner(
    stack: LocalStack, redis_url: str, extra: dict[str, set[int]] | None = None
) -> dict[str, dict[str, int]]:
    """Redis's CLIENT LIST, each connection attributed to the process that holds its
    other end (a stack service, or one of ``extra``): {owner: {"connections", "subscribers"}}."""
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    owners = {**service_pids(stack), **(extra or {})}
    by_port = {local: name for name, pids in owners.items() for local, _ in tcp_peers(pids, port)}
    client = redis.Redis.from_url(redis_url, protocol=2, lib_name=None, lib_version=None)
    try:
        listed = client.client_list()
        me = client.client_id()
    finally:
        client.close()
    out: dict[str, dict[str, int]] = {}
    for entry in listed:
        local = int(str(entry["addr"]).rsplit(":", 1)[1])
        owner = "this measurement" if int(entry["id"]) == me else by_port.get(local, "other")
        counts = out.setdefault(owner, {"connections": 0, "subscribers": 0})
        counts["connections"] += 1
        if int(entry.get("sub", 0)) or int(entry.get("psub", 0)) or "P" in str(entry["flags"]):
            counts["subscribers"] += 1
    return out
