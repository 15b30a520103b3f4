"""The whole offline stack, each part its own supervised process, as `tripkit dev` runs it.

Redis, the Upstash-REST gateway, the Inngest-compatible executor, the OpenAI-protocol
model server and the app (``uvicorn tripkit.api:app``) start in that order. Each prints a
``KEY=VALUE`` line when it is ready; the stack reads it from the service's log. The app
is configured only through its environment, exactly as in production, and runs in an
empty directory so no ``.env.local`` leaks real credentials into it. An app process that
dies is started again on the same port, as a redeploy would bring it back; the executor
keeps retrying the run meanwhile.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tripkit.devstack import process
from tripkit.devstack.process import Managed
from tripkit.devstack.redis_server import free_port
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
        self.proc = process.spawn(self.argv, log=self._log, env=self.env, cwd=cwd)

    def wait_ready(self, check: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise StackError(f"{self.name} exited while starting:\n{self.tail()}")
            if self.ready_key is not None:
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if line.startswith(f"{self.ready_key}="):
                        self.value = line.split("=", 1)[1].strip()
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


class LocalStack(Managed):
    """Start with ``with LocalStack() as stack:``; ``stack.env`` has the URLs and keys."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self._tmp = tempfile.TemporaryDirectory(prefix="tripkit-stack-")
        self.workdir = Path(self._tmp.name)
        self.log_dir = self.config.log_dir or self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.rest_token = secrets.token_urlsafe(24)
        self.openai_key = "sk-local-" + secrets.token_hex(8)
        # Signed (production) mode needs an event key too: the SDK refuses to send without.
        self.event_key = secrets.token_hex(16) if self.config.signing_key else None
        self.services: dict[str, Service] = {}
        self.app_restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.api_url = ""

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
        self._start_app()
        self.sync()
        self._watcher = threading.Thread(target=self._watch, name="tripkit-stack", daemon=True)
        self._watcher.start()

    def app_env(self) -> dict[str, str]:
        """The app's whole configuration, as production would set it."""
        env = self._base_env()
        env.update(
            {
                "UPSTASH_REDIS_REST_URL": self.rest_url,
                "UPSTASH_REDIS_REST_TOKEN": self.rest_token,
                "TRIPKIT_REDIS_TRANSPORT": "rest",
                "INNGEST_BASE_URL": self.inngest_url,
                "OPENAI_BASE_URL": self.openai_base_url,
                "OPENAI_API_KEY": self.openai_key,
            }
        )
        if self.config.signing_key:
            env["INNGEST_SIGNING_KEY"] = self.config.signing_key
        if self.event_key:
            env["INNGEST_EVENT_KEY"] = self.event_key
        env.update(self.config.extra_app_env)
        return env

    def _start_app(self) -> None:
        app = Service(
            "app",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tripkit.api:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--log-level",
                "warning",
            ],
            self.app_env(),
            self.log_dir / "app.log",
        )
        self.services["app"] = app
        app.start(self.workdir)
        app.wait_ready(self._app_answers)

    def _app_answers(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=1.0).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def sync(self) -> None:
        """Make the executor discover the app's functions (Inngest's "Sync" button)."""
        try:
            response = httpx.post(
                f"{self.inngest_url}/_control/sync",
                json={"url": f"{self.api_url}/api/inngest"},
                timeout=15.0,
            )
        except httpx.HTTPError as exc:
            raise StackError(f"Could not sync the app with the executor: {exc}.") from None
        if response.status_code != 200:
            raise StackError(f"Syncing the app failed: {response.text[:300]}")

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                app = self.services.get("app")
                if app is None or app.alive or self._stopping.is_set():
                    continue
                app.stop()
                self.app_restarts += 1
                try:
                    self._start_app()
                except StackError as exc:
                    print(f"tripkit dev: the app did not come back: {exc}", file=sys.stderr)

    def kill_app(self, sig: int = signal.SIGKILL) -> None:
        """Kill the app process (a crash, or a redeploy); the watcher starts it again."""
        app = self.services["app"]
        if app.proc is not None:
            os.kill(app.proc.pid, sig)

    def wait_app_restarted(self, restarts: int, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.app_restarts >= restarts and self.services["app"].alive:
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
        self._tmp.cleanup()

    # -- what a second shell needs ------------------------------------------------------
    @property
    def env(self) -> Mapping[str, str]:
        return {
            "TRIPKIT_API_URL": self.api_url,
            "REDIS_URL": self.redis_url,
            "UPSTASH_REDIS_REST_URL": self.rest_url,
            "UPSTASH_REDIS_REST_TOKEN": self.rest_token,
            "INNGEST_BASE_URL": self.inngest_url,
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": self.openai_key,
        }
