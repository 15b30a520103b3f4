"""Small helpers shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import uvicorn

from tripkit.devstack.testing import free_port
from tripkit.models import RunRecord

__all__ = [
    "SERVICE_PREFIXES",
    "ModelControl",
    "clean_env",
    "free_port",
    "generate_and_poll",
    "needs_executor",
    "process_gone",
    "run_cli",
    "run_record",
    "wait_final",
    "wait_until",
]


class ServerThread:
    """An ASGI app served by uvicorn in a daemon thread, on a fixed port (a free one by
    default) so that it can be stopped and started again; also a context manager."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app, self.port = app, port or free_port()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        # IPPROTO_TCP: asyncio sets TCP_NODELAY only then (else 40 ms per keep-alive reply)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        self.server = server
        self.thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert self.thread.is_alive(), "uvicorn exited while starting"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def needs_executor(*options: str) -> pytest.MarkDecorator:
    """Skip while tripkit's local executor refuses one of these function options (by
    their sync-body names: ``cancel``, ``timeouts``) at sync; the test then runs as soon
    as the executor implements them."""
    from tripkit.devstack.executor import registry

    refused = [o for o in options if o in getattr(registry, "UNSUPPORTED_OPTIONS", ())]
    return pytest.mark.skipif(
        bool(refused),
        reason=f"the local executor does not implement {', '.join(refused)} yet "
        "(issue 11, executor work): it refuses them at sync",
    )


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


class ModelControl:
    """The offline model server's ``/_control`` switches (faults, stats), over HTTP."""

    def __init__(self, openai_base_url: str) -> None:
        self.base = openai_base_url.removesuffix("/v1")

    def reset(self) -> None:
        httpx.post(f"{self.base}/_control/reset", timeout=5).raise_for_status()

    def fault(self, **fault: Any) -> None:
        httpx.post(f"{self.base}/_control/faults", json=fault, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base}/_control/stats", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def served(self, task: str, index: int | None = None) -> int:
        """How many calls of this task (and bundle index) streamed to the end."""
        return sum(1 for s in self.stats()["served"] if s["task"] == task and s["index"] == index)


def wait_final(api_url: str, session_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``GET /api/session/{id}`` until a final status; return the last body."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = httpx.get(f"{api_url}/api/session/{session_id}", timeout=30).json()
        if body.get("status") in ("completed", "failed", "cancelled"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(
                f"session {session_id} still {body.get('status')} after {timeout} s"
            )
        time.sleep(0.1)


#: A small request: two bundles.
SMALL_REQUEST = {"interests": ["food"], "tripLengthDays": 2, "budget": 800, "bundleCount": 2}


def generate_and_poll(api_url: str, interval: float) -> tuple[str, int]:
    """POST :data:`SMALL_REQUEST`, then poll every ``interval`` s until final, as the
    browser does; the session id and the polls made."""
    session_id = httpx.post(
        f"{api_url}/api/generate-bundles", json=SMALL_REQUEST, timeout=10
    ).json()["sessionId"]
    polls = 0
    deadline = time.monotonic() + 60
    while True:
        polls += 1
        state = httpx.get(f"{api_url}/api/session/{session_id}", timeout=10).json()
        if state["status"] in ("completed", "failed"):
            return session_id, polls
        assert time.monotonic() < deadline, "the generation did not finish"
        time.sleep(interval)


def run_record(session_id: str, **extra: Any) -> RunRecord:
    """A completed 2-bundle run record as the worker writes it (see tripkit.worker); the
    camelCase fields in ``extra`` replace its own."""
    record = {
        "sessionId": session_id,
        "runId": "01RUN" + session_id[:6],
        "queuedAt": "2026-06-01T10:00:00+00:00",
        "startedAt": "2026-06-01T10:00:01+00:00",
        "firstSummaryAt": "2026-06-01T10:01:00+00:00",
        "summaryAt": ["2026-06-01T10:01:00+00:00", "2026-06-01T10:03:00+00:00"],
        "attempts": {"bundle-0": 2, "bundle-1": 0},
        "bundles": 2,
        "steps": 2,
        "modelCalls": 2,
        "usage": [
            {"model": "gpt-4o-mini", "promptTokens": 650, "completionTokens": 480},
            {"model": "gpt-4o-mini", "promptTokens": 350, "completionTokens": 420},
        ],
        "status": "completed",
        "completedAt": "2026-06-01T10:05:00+00:00",
    }
    return RunRecord.model_validate(record | extra)


#: Variables that point at services or configure tripkit: a command under test runs
#: without the caller's (a developer's shell may hold real credentials).
SERVICE_PREFIXES = ("UPSTASH_", "REDIS_URL", "INNGEST_", "OPENAI_", "TRIPKIT_")


def clean_env(env: Mapping[str, str] | None = None, **variables: str) -> dict[str, str]:
    """This process's environment without :data:`SERVICE_PREFIXES`, plus ``env`` and
    ``variables``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_PREFIXES)}
    out["PYTHONUNBUFFERED"] = "1"
    out.update(env or {})
    out.update(variables)
    return out


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    **variables: str,
) -> subprocess.CompletedProcess[str]:
    """``tripkit ARGS`` as a user runs it: a real process in ``cwd``, in a
    :func:`clean_env` with ``env`` and ``variables`` set."""
    return subprocess.run(
        [sys.executable, "-m", "tripkit.cli", *args],
        capture_output=True,
        text=True,
        env=clean_env(env, **variables),
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
