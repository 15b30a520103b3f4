"""Starting child processes that cannot outlive their owner.

On Linux each child gets ``PR_SET_PDEATHSIG(SIGKILL)``: the kernel kills it when its
parent dies, even when the parent is SIGKILLed and no Python code runs. The signal
fires when the *thread* that forked the child exits, not the process, so :func:`spawn`
forks from the main thread when called there (pytest fixtures, scripts, the CLI) and
otherwise hands the fork to one long-lived daemon thread, so a child started from a
worker thread (a supervisor restarting a crashed server) survives that worker.

Children run in a session of their own, so the terminal's Ctrl-C reaches only the owner,
which then stops them in order.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self

_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child when its parent dies (Linux).

    Everything is resolved in the parent, so the child only makes one libc call between
    fork and exec. If the parent already died before prctl ran, exit at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    sig = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


_Job = tuple[list[str], dict[str, Any], "Future[subprocess.Popen[bytes]]"]


def _popen(argv: list[str], options: dict[str, Any]) -> subprocess.Popen[bytes]:
    preexec = _pdeathsig_preexec()
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
        start_new_session=preexec is not None,
        **options,
    )


class _Spawner:
    """One long-lived daemon thread that forks on behalf of short-lived threads."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def spawn(self, argv: list[str], options: dict[str, Any]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="tripkit-spawner", daemon=True
                )
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((argv, options, future))
        return future.result()

    def _run(self) -> None:
        while True:
            argv, options, future = self._jobs.get()
            try:
                future.set_result(_popen(argv, options))
            except BaseException as exc:
                future.set_exception(exc)


_spawner = _Spawner()


def spawn(
    argv: list[str],
    *,
    log: Any,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr to ``log`` (a file or a pipe constant);
    ``pass_fds`` stay open in the child (a listening socket shared by several servers)."""
    options: dict[str, Any] = {"stdout": log, "env": dict(env) if env is not None else None}
    if cwd is not None:
        options["cwd"] = str(cwd)
    if pass_fds:
        options["pass_fds"] = pass_fds
    if threading.current_thread() is threading.main_thread():
        return _popen(argv, options)
    return _spawner.spawn(argv, options)


def stop(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


class Managed:
    """``start()``/``stop()`` servers usable as ``with Server() as s:`` (stop on exit)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
