"""The whole offline stack, each part its own supervised process, as `tripkit dev` runs it.

Redis, the Upstash-REST gateway, the Inngest-compatible executor, the OpenAI-protocol
model server and the app start in that order. Each prints a ``KEY=VALUE`` line when it
is ready; the stack reads it from the service's log. The app runs in the production
shape by default: one API process (``TRIPKIT_ROLE=api``: the public routes) and several
worker processes (``TRIPKIT_ROLE=worker``: ``/api/inngest``, where the steps run), which
share one listening socket the way ``uvicorn --workers`` does, so steps never compete
with the API's requests inside one event loop. ``StackConfig(shape="single")`` runs one
process serving everything instead. The app is configured only through its
environment, exactly as in production, and runs in an empty directory so no
``.env.local`` leaks real credentials into it. An app process that dies is started again
on the same port, as a redeploy would bring it back; the executor keeps retrying the run
meanwhile.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import httpx
import redis as redis_py

from tripkit.devstack import process, serving
from tripkit.devstack.process import Managed
from tripkit.devstack.redis_server import server_version
from tripkit.devstack.serving import free_port
from tripkit.errors import TripkitError

#: Variables that would point the app at real services; never inherited by the stack.
_REAL_SERVICE_VARS = (
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "REDIS_URL",
    "INNGEST_EVENT_KEY",
    "INNGEST_SIGNING_KEY",
    "INNGEST_SIGNING_KEY_FALLBACK",
    "INNGEST_BASE_URL",
    "INNGEST_API_BASE_URL",
    "INNGEST_EVENT_API_BASE_URL",
    "INNGEST_DEV",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)
#: Prefixes of variables never inherited either: the stack sets every one the app needs.
_REAL_SERVICE_PREFIXES = ("TRIPKIT_", "INNGEST_", "OPENAI_")
READY_TIMEOUT = 30.0


class StackError(TripkitError):
    """A part of the local stack did not start."""

    remedy = "See the service's log in the stack's log directory."


def default_workers() -> int:
    """Worker processes for this host: one per core, at most four."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class StackConfig:
    """Knobs of the local stack; the defaults suit `tripkit dev`."""

    api_port: int = 0  # 0: a free port
    chunk_delay: float = 0.02  # seconds between streamed chunks: visible in the demo
    backoff_ms: list[int] | None = None  # executor retry waits; None: Inngest's defaults
    unreachable_budget: float = 60.0  # how long a run waits for a restarting app
    signing_key: str | None = None  # set: the app runs in signed production mode
    log_dir: Path | None = None
    extra_app_env: dict[str, str] = field(default_factory=dict)
    #: "split": an API process and worker processes (production); "single": one process.
    shape: Literal["split", "single"] = "split"
    workers: int = field(default_factory=default_workers)  # worker processes when split
    #: How the app reaches Redis: "rest" through the gateway (as it reaches Upstash), or
    #: "resp" straight to the Redis server.
    redis_transport: Literal["rest", "resp"] = "rest"
    #: Added to the worker processes' niceness: on one host, steps then get the CPU the
    #: API leaves, so a burst of runs never slows the API's answers.
    worker_nice: int = 10


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_key: str | None = None  # the KEY=VALUE line the service prints when ready
    proc: subprocess.Popen[bytes] | None = None
    value: str = ""
    _log: IO[bytes] | None = None

    def start(self, cwd: Path) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_offset = self._log.tell()
        self.proc = process.spawn(
            self.argv, log=self._log, env=self.env, cwd=cwd, pass_fds=self.pass_fds
        )

    pass_fds: tuple[int, ...] = ()
    ready_text: str | None = None  # or a line of the log that says it is ready
    _log_offset: int = 0

    def wait_ready(self, check: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise StackError(f"{self.name} exited while starting:\n{self.tail()}")
            if self.ready_key is not None or self.ready_text is not None:
                with open(self.log_path, "rb") as log:
                    log.seek(self._log_offset)  # this start's lines, not an earlier one's
                    text = log.read().decode(errors="replace")
                for line in text.splitlines():
                    if self.ready_key is not None and line.startswith(f"{self.ready_key}="):
                        self.value = line.split("=", 1)[1].strip()
                        return
                    if self.ready_text is not None and self.ready_text in line:
                        return
            elif check is not None and check():
                return
            time.sleep(0.05)
        raise StackError(f"{self.name} did not become ready in {READY_TIMEOUT:.0f} s.")

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            process.stop(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None


def _server_version(url: str) -> str:
    """What the running server says it is (``INFO server``), for `tripkit dev` to show."""
    client = redis_py.Redis.from_url(url, socket_timeout=READY_TIMEOUT)
    try:
        return server_version(client.info("server"))
    except redis_py.RedisError as exc:
        raise StackError(f"The embedded Redis at {url} did not answer INFO: {exc}") from None
    finally:
        client.close()


def _role(name: str) -> str:
    """The ``TRIPKIT_ROLE`` of an app process by its service name (``worker-2``: worker)."""
    return "all" if name == "app" else name.split("-")[0]


class LocalStack(Managed):
    """Start with ``with LocalStack() as stack:``; ``stack.env`` has the URLs and keys."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        if self.config.workers < 1:
            raise StackError("StackConfig.workers must be at least 1.")
        self._tmp = tempfile.TemporaryDirectory(prefix="tripkit-stack-")
        self.workdir = Path(self._tmp.name)
        self.log_dir = self.config.log_dir or self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.rest_token = secrets.token_urlsafe(24)
        self.openai_key = "sk-local-" + secrets.token_hex(8)
        # Signed (production) mode needs an event key too: the SDK refuses to send without.
        self.event_key = secrets.token_hex(16) if self.config.signing_key else None
        self.services: dict[str, Service] = {}
        self.restarts: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._worker_socket: socket.socket | None = None
        self.api_url = ""
        self.worker_url = ""
        self.redis_version = ""  # ``valkey 8.1.8``: what the embedded server reports

    @property
    def app_restarts(self) -> int:
        """How many app processes (API or worker) were started again after dying."""
        return sum(self.restarts.values())

    @property
    def app_services(self) -> list[str]:
        """The names of the app's processes: ``app``, or ``api`` and ``worker-1``..."""
        if self.config.shape == "single":
            return ["app"]
        return ["api", *(f"worker-{n}" for n in range(1, self.config.workers + 1))]

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _REAL_SERVICE_VARS}
        # Also OPENAI_MODEL (an alias of TRIPKIT_OPENAI_MODEL the model server may not know)
        # and INNGEST_SERVE_ORIGIN (the SDK would register a production URL on sync).
        env = {k: v for k, v in env.items() if not k.startswith(_REAL_SERVICE_PREFIXES)}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _service(self, name: str, module: str, args: list[str], key: str | None) -> Service:
        env = self._base_env()
        env["UPSTASH_REDIS_REST_TOKEN"] = self.rest_token
        if self.config.signing_key:
            env["INNGEST_SIGNING_KEY"] = self.config.signing_key
        if self.event_key:
            env["INNGEST_EVENT_KEY"] = self.event_key
        service = Service(
            name,
            [sys.executable, "-m", module, *args],
            env,
            self.log_dir / f"{name}.log",
            ready_key=key,
        )
        self.services[name] = service
        service.start(self.workdir)
        return service

    def _start(self) -> None:
        redis = self._service(
            "redis", "tripkit.devstack.redis_server", ["--port", "0"], "REDIS_URL"
        )
        redis.wait_ready()
        self.redis_url = redis.value
        self.redis_version = _server_version(self.redis_url)

        gateway = self._service(
            "rest-gateway",
            "tripkit.devstack.rest_gateway",
            ["--port", "0", "--redis-url", self.redis_url],
            "UPSTASH_REDIS_REST_URL",
        )
        executor_args = ["--port", "0", "--unreachable-budget", str(self.config.unreachable_budget)]
        if self.config.backoff_ms:
            executor_args += ["--backoff-ms", ",".join(map(str, self.config.backoff_ms))]
        if self.config.signing_key:
            executor_args += ["--signing-key-env", "INNGEST_SIGNING_KEY"]
            executor_args += ["--event-key-env", "INNGEST_EVENT_KEY"]
        executor = self._service(
            "executor", "tripkit.devstack.executor", executor_args, "INNGEST_BASE_URL"
        )
        model = self._service(
            "model-server",
            "tripkit.devstack.model_server",
            ["--port", "0", "--chunk-delay", str(self.config.chunk_delay)],
            "OPENAI_BASE_URL",
        )
        for service in (gateway, executor, model):
            service.wait_ready()
        self.rest_url, self.inngest_url, self.openai_base_url = (
            gateway.value,
            executor.value,
            model.value,
        )

        self.api_port = self.config.api_port or free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        if self.config.shape == "split":
            # One listening socket for every worker process: the kernel hands each
            # connection to one of them, and a restarting worker loses no connection.
            sock = serving.listen(
                "127.0.0.1", 0, what="The worker processes", hint="Is the machine out of ports?"
            )
            sock.listen(2048)
            self._worker_socket = sock
            self.worker_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        else:
            self.worker_url = self.api_url
        for name in self.app_services:
            self._start_app(name)
        self.sync()
        self._watcher = threading.Thread(target=self._watch, name="tripkit-stack", daemon=True)
        self._watcher.start()

    def app_env(self, role: str = "all") -> dict[str, str]:
        """The app's whole configuration, as production would set it."""
        env = self._base_env()
        env.update(
            {
                "UPSTASH_REDIS_REST_URL": self.rest_url,
                "UPSTASH_REDIS_REST_TOKEN": self.rest_token,
                "TRIPKIT_REDIS_TRANSPORT": self.config.redis_transport,
                "REDIS_URL": self.redis_url,
                "INNGEST_BASE_URL": self.inngest_url,
                "OPENAI_BASE_URL": self.openai_base_url,
                "OPENAI_API_KEY": self.openai_key,
                "TRIPKIT_ROLE": role,
            }
        )
        if self.config.signing_key:
            env["INNGEST_SIGNING_KEY"] = self.config.signing_key
        if self.event_key:
            env["INNGEST_EVENT_KEY"] = self.event_key
        env.update(self.config.extra_app_env)
        return env

    def _start_app(self, name: str) -> None:
        role = _role(name)
        pass_fds: tuple[int, ...] = ()
        if role == "worker":
            assert self._worker_socket is not None
            fd = self._worker_socket.fileno()
            argv = [sys.executable, "-m", "tripkit.devstack.serve_app", "--fd", str(fd)]
            argv += ["--nice", str(self.config.worker_nice)]
            pass_fds = (fd,)
        else:  # exactly how production starts it
            argv = [sys.executable, "-m", "uvicorn", "tripkit.api:app", "--no-access-log"]
            argv += ["--host", "127.0.0.1", "--port", str(self.api_port)]
        app = Service(
            name,
            argv,
            self.app_env(role),
            self.log_dir / f"{name}.log",
            pass_fds=pass_fds,
            ready_text="Application startup complete",
        )
        self.services[name] = app
        app.start(self.workdir)
        app.wait_ready()

    def sync(self) -> None:
        """Make the executor discover the app's functions (Inngest's "Sync" button)."""
        try:
            response = httpx.post(
                f"{self.inngest_url}/_control/sync",
                json={"url": f"{self.worker_url}/api/inngest"},
                timeout=15.0,
            )
        except httpx.HTTPError as exc:
            raise StackError(f"Could not sync the app with the executor: {exc}.") from None
        if response.status_code != 200:
            raise StackError(f"Syncing the app failed: {response.text[:300]}")

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            for name in self.app_services:
                with self._lock:
                    app = self.services.get(name)
                    if app is None or app.alive or self._stopping.is_set():
                        continue
                    app.stop()
                    self.restarts[name] += 1
                    try:
                        self._start_app(name)
                    except StackError as exc:
                        print(f"tripkit dev: {name} did not come back: {exc}", file=sys.stderr)

    def kill_app(self, sig: int = signal.SIGKILL, role: str = "worker") -> list[int]:
        """Kill every app process that serves ``role`` (``worker``: where the steps run;
        ``api``), as a crash or a redeploy would; the watcher starts them again. In the
        single-process shape that is the one app process. Returns the pids killed."""
        names = (
            self.app_services
            if self.config.shape == "single"
            else [name for name in self.app_services if _role(name) == role]
        )
        killed = []
        for name in names:
            proc = self.services[name].proc
            if proc is not None:
                os.kill(proc.pid, sig)
                killed.append(proc.pid)
        return killed

    def wait_app_restarted(self, restarts: int, timeout: float = READY_TIMEOUT) -> None:
        """Wait until ``restarts`` restarts happened in all and every app process runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                alive = all(self.services[name].alive for name in self.app_services)
                if self.app_restarts >= restarts and alive:
                    return
            time.sleep(0.05)
        raise StackError("The app was not restarted in time.")

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._lock:
            for service in reversed(list(self.services.values())):
                service.stop()
        if self._worker_socket is not None:
            self._worker_socket.close()
        self._tmp.cleanup()

    # -- what a second shell needs ------------------------------------------------------
    @property
    def env(self) -> Mapping[str, str]:
        return {
            "TRIPKIT_API_URL": self.api_url,
            "TRIPKIT_WORKER_URL": self.worker_url,
            "REDIS_URL": self.redis_url,
            "UPSTASH_REDIS_REST_URL": self.rest_url,
            "UPSTASH_REDIS_REST_TOKEN": self.rest_token,
            "INNGEST_BASE_URL": self.inngest_url,
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": self.openai_key,
        }
