"""How the devstack's HTTP stand-ins start: the REST gateway, the executor, the model server.

Each binds its listening socket itself before uvicorn runs, so a taken port is a clear
error instead of uvicorn's log line and exit; prints one ``KEY=URL`` line once it accepts
connections (:class:`~tripkit.devstack.stack.LocalStack` waits for that line in the
service's log); and can run on a daemon thread for tests and notebooks
(:class:`ThreadedServer`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Literal, Self

import uvicorn
from starlette.types import ASGIApp

from tripkit.devstack.process import Managed
from tripkit.errors import ConfigError

HOST = "127.0.0.1"

Lifespan = Literal["on", "off"]


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (another process may take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listen(host: str, port: int, *, what: str, hint: str) -> socket.socket:
    """A bound TCP socket for uvicorn; ConfigError naming ``what`` when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive response waits 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"{what} cannot listen on {host}:{port} ({err.strerror}). {hint}"
        ) from None
    return sock


def _server(app: ASGIApp, lifespan: Lifespan, ready_line: str | None = None) -> _Server:
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan=lifespan, loop="asyncio"
    )
    return _Server(config, ready_line)


class _Server(uvicorn.Server):
    """uvicorn that prints ``ready_line`` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready_line: str | None) -> None:
        super().__init__(config)
        self.ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.ready_line is not None:
            print(self.ready_line, flush=True)


def run(
    app: ASGIApp, sock: socket.socket, *, ready_key: str, url: str, lifespan: Lifespan = "on"
) -> None:
    """Serve on ``sock`` until SIGINT/SIGTERM; print ``{ready_key}={url}`` once listening.

    uvicorn shuts down gracefully on the signal, then raises it again, so the process ends
    as the signal would have ended it (SIGINT: KeyboardInterrupt in the caller).
    """
    _server(app, lifespan, f"{ready_key}={url}").run(sockets=[sock])


def _serve_quietly(server: uvicorn.Server, sock: socket.socket) -> None:
    """uvicorn calls sys.exit() when the app fails to start; start() reports that instead."""
    with contextlib.suppress(SystemExit):
        server.run(sockets=[sock])


class ThreadedServer(Managed):
    """An ASGI app served by uvicorn on a daemon thread: ``with Sub(...) as srv: srv.url``.

    ``start()`` returns once connections are accepted; ``stop()`` shuts uvicorn down
    gracefully (the app's lifespan closes its connections). It can start again after a
    stop, on a new free port unless ``port`` was given. Subclasses name themselves in
    ``what`` and may raise their own error type from :meth:`start_failed`.
    """

    what = "The server"
    hint = "Pass port=0 to pick a free one."
    thread_name = "tripkit-server"

    def __init__(
        self, app: ASGIApp, *, host: str = HOST, port: int = 0, lifespan: Lifespan = "on"
    ) -> None:
        self.host = host
        self._requested_port = port
        self._app = app
        self._lifespan: Lifespan = lifespan
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int | None:
        """The bound port while started, else None."""
        return self._port

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError(f"{self.what} is not started")
        return f"http://{self.host}:{self._port}"

    def start(self, timeout: float = 10.0) -> Self:
        """Serve in a daemon thread; return once listening. A no-op if already started."""
        if self._thread is not None:
            return self
        try:
            sock = listen(self.host, self._requested_port, what=self.what, hint=self.hint)
        except ConfigError as err:
            raise self.start_failed(err.message) from None
        # A fresh uvicorn.Server each time: one cannot be restarted after it exited.
        server = _server(self._app, self._lifespan)
        thread = threading.Thread(
            target=_serve_quietly, args=(server, sock), name=self.thread_name, daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise self.start_failed(
                    f"{self.what} did not start on {self.host}:{self._requested_port}."
                )
            time.sleep(0.01)
        self._port = sock.getsockname()[1]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful uvicorn shutdown; idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None and self._server is not None:
            self._server.should_exit = True
            thread.join(timeout)
        self._server = None
        self._port = None

    def start_failed(self, reason: str) -> Exception:
        """The error :meth:`start` raises when the server does not come up."""
        return ConfigError(reason)
