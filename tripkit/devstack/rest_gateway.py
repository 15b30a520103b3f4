"""An Upstash-REST-compatible HTTP gateway in front of a real Redis, for offline work.

Upstash recommends SRH (a Docker image) as the local stand-in for
``UPSTASH_REDIS_REST_URL``; Docker does not run everywhere, so this is ours: a small
Starlette app that checks the bearer token, forwards commands over RESP (see
:mod:`tripkit.devstack.redis_wire`) and shapes the answers the way Upstash does, including
``/pipeline``, ``/multi-exec``, ``Upstash-Encoding: base64``,
``Upstash-Response-Format: resp2`` and the pub/sub stream ``POST /subscribe/<channel>``
(server-sent events, one Redis connection per stream). An ``Upstash-*`` header it does
not implement is refused, never ignored.

Run it alone with ``python -m tripkit.devstack.rest_gateway --port 8079 --redis-url URL``
(the token comes from ``--token`` or ``UPSTASH_REDIS_REST_TOKEN``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote_to_bytes

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tripkit.devstack import serving
from tripkit.devstack.redis_wire import (
    ErrorReply,
    NullArray,
    Reply,
    RespConnection,
    RespPool,
    SimpleString,
    encode_reply,
)
from tripkit.errors import ConfigError, StoreError, TripkitError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 10 * 1024 * 1024
TOKEN_ENV = "UPSTASH_REDIS_REST_TOKEN"
AUTH_ERROR = "WRONGPASS invalid or missing auth token"
SYNC_TOKEN_HEADER = "upstash-sync-token"
_ALLOWED_METHODS = frozenset({"HEAD", "GET", "POST", "PUT"})
ENCODING_HEADER = "upstash-encoding"
FORMAT_HEADER = "upstash-response-format"
#: Request headers with nothing to do here: the sync token asks for read-your-writes, which
#: one server always gives; the SDKs' telemetry only feeds Upstash's statistics.
_HONOURED_AS_IS = frozenset(
    {
        SYNC_TOKEN_HEADER,
        "upstash-telemetry-sdk",
        "upstash-telemetry-runtime",
        "upstash-telemetry-platform",
    }
)
_KNOWN_HEADERS = frozenset({ENCODING_HEADER, FORMAT_HEADER, *_HONOURED_AS_IS})
_TOKEN_PARAM = "_token"

Json: TypeAlias = "str | int | list[Json] | dict[str, Json] | None"
_RESP2_TYPE = "application/octet-stream"
Command: TypeAlias = list[bytes]

# Commands that would block a pooled connection, stream forever, or change the state of
# a connection that the next request reuses. Upstash rejects these over REST too.
_BLOCKING = frozenset(
    {
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
    }
)
_TRANSACTION = frozenset({"MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"})
_UNSUPPORTED = frozenset(
    {
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "MONITOR",
        "SYNC",
        "PSYNC",
        "AUTH",
        "HELLO",
        "SELECT",
        "QUIT",
        "RESET",
    }
)


class _HttpError(Exception):
    """Ends a request with ``{"error": message}`` and the given status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def unsupported_reason(command: Sequence[bytes]) -> str | None:
    """Why the gateway refuses this command, or None if it may go to Redis."""
    name = command[0].decode("utf-8", "replace").upper()
    if name in _BLOCKING:
        return f"ERR blocking command {name} is not supported over REST"
    if name in ("XREAD", "XREADGROUP"):
        for arg in command[1:]:
            word = arg.upper()
            if word == b"STREAMS":
                break
            if word == b"BLOCK":
                return f"ERR blocking {name} (with BLOCK) is not supported over REST"
    if name in _TRANSACTION:
        return f"ERR {name} is not supported over REST; send the commands to /multi-exec"
    if name in _UNSUPPORTED:
        return f"ERR {name} is not supported over REST"
    if name == "CLIENT" and len(command) > 1 and command[1].upper() == b"REPLY":
        return "ERR CLIENT REPLY is not supported over REST"
    return None


@dataclass(frozen=True)
class ReplyFormat:
    """How the client asked for its answer, from the ``Upstash-*`` request headers."""

    b64: bool = False  # Upstash-Encoding: base64
    resp2: bool = False  # Upstash-Response-Format: resp2


def reply_format(headers: Mapping[str, str]) -> ReplyFormat:
    """Read the ``Upstash-*`` headers; refuse any this gateway does not implement.

    Upstash documents ``Upstash-Encoding: base64`` and ``Upstash-Response-Format``
    (``json``, the default, or ``resp2``; any other value and resp2 with base64 are a
    400). A header accepted and ignored would make a local run quietly unlike
    production, so an unknown one is an error that names it.
    """
    for name in headers:
        lowered = name.lower()
        if lowered.startswith("upstash-") and lowered not in _KNOWN_HEADERS:
            shown = "-".join(part.capitalize() for part in lowered.split("-"))
            raise _HttpError(
                400,
                f"ERR the {shown} header is not supported by this gateway; it implements "
                "Upstash-Encoding, Upstash-Response-Format and Upstash-Sync-Token",
            )
    encoding = headers.get(ENCODING_HEADER, "").strip()
    if encoding and encoding.lower() != "base64":
        raise _HttpError(
            400, f"ERR invalid Upstash-Encoding {encoding!r}: the only encoding is base64"
        )
    form = headers.get(FORMAT_HEADER, "").strip().lower() or "json"
    if form not in ("json", "resp2"):
        raise _HttpError(400, f"ERR invalid Upstash-Response-Format {form!r}: use json or resp2")
    if form == "resp2" and encoding:
        raise _HttpError(
            400, "ERR Upstash-Encoding: base64 is not allowed with Upstash-Response-Format: resp2"
        )
    return ReplyFormat(b64=bool(encoding), resp2=form == "resp2")


def to_json(reply: Reply, *, b64: bool) -> Json:
    """Shape a reply like Upstash: base64 strings except the status ``OK`` when asked."""
    if isinstance(reply, ErrorReply):
        return str(reply)  # only reached for errors nested in a result; plain text
    if isinstance(reply, SimpleString):
        if b64 and reply != "OK":
            return base64.b64encode(reply.encode("utf-8")).decode("ascii")
        return str(reply)
    if isinstance(reply, bytes):
        if b64:
            return base64.b64encode(reply).decode("ascii")
        return reply.decode("utf-8", "replace")
    if isinstance(reply, list):
        return [to_json(item, b64=b64) for item in reply]
    if isinstance(reply, NullArray):
        return None
    return reply


def _item(reply: Reply, *, b64: bool) -> dict[str, Json]:
    if isinstance(reply, ErrorReply):
        return {"error": str(reply)}
    return {"result": to_json(reply, b64=b64)}


def _parse_command(value: Any, where: str) -> Command:
    """A JSON array as Redis arguments: strings, numbers and booleans, as Upstash takes them.

    Upstash's SDKs send booleans as JSON booleans (``set("k", True)``); they reach Redis
    as their JSON text, ``true``/``false``. Null, arrays and objects have no argument
    form and are refused (the SDKs stringify objects themselves).
    """
    if not isinstance(value, list):
        raise _HttpError(
            400, f"ERR {where}: expected a JSON array of strings, numbers and booleans"
        )
    if not value:
        raise _HttpError(400, f"ERR {where}: empty command")
    command: Command = []
    for arg in value:
        if isinstance(arg, str):
            command.append(arg.encode("utf-8"))
        elif isinstance(arg, bool):
            command.append(b"true" if arg else b"false")
        elif isinstance(arg, int):
            command.append(str(arg).encode("ascii"))
        elif isinstance(arg, _Number):
            command.append(arg.text.encode("ascii"))
        else:
            kind = "an array" if isinstance(arg, list) else "an object"
            kind = "null" if arg is None else kind
            raise _HttpError(
                400,
                f"ERR {where}: arguments must be strings, numbers or booleans, not {kind}",
            )
    return command


class _Number:
    """A JSON float kept as its decimal text, so ``1e2`` reaches Redis as written."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=_Number, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise _HttpError(400, f"ERR failed to parse the request body as JSON: {exc}") from None


def _check_token(request: Request, token: bytes) -> bool:
    """Header or ``?_token=``; compared in constant time."""
    candidates = []
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        candidates.append(value.strip())
    if "_token" in request.query_params:
        candidates.append(request.query_params["_token"])
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(candidate.encode("utf-8"), token)
    return ok


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = _HttpError(400, f"ERR max request size exceeded. Limit: {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class _Gateway:
    """The request handler; holds the pool and the sync-token counter."""

    def __init__(self, redis_url: str, token: str, *, max_request_bytes: int) -> None:
        if not token:
            raise ConfigError(
                f"The REST gateway needs a token ({TOKEN_ENV}).",
                remedy=f"Set {TOKEN_ENV} to any secret string and use the same one in clients.",
            )
        self._redis_url = redis_url
        self._token = token.encode("utf-8")
        self._max = max_request_bytes
        self._pool: RespPool | None = None
        RespPool.from_url(redis_url)  # fail fast on a malformed URL
        # Opaque and increasing across restarts: start from the clock.
        self._sync = itertools.count(time.time_ns())

    @property
    def pool(self) -> RespPool:
        # Created on first use, inside the server's event loop.
        if self._pool is None:
            self._pool = RespPool.from_url(self._redis_url)
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def respond(self, status: int, content: Json) -> Response:
        return JSONResponse(content, status_code=status, headers=self._sync_header())

    def respond_resp2(self, status: int, content: bytes) -> Response:
        """An ``Upstash-Response-Format: resp2`` answer: Redis's own bytes."""
        return Response(
            content, status_code=status, media_type=_RESP2_TYPE, headers=self._sync_header()
        )

    def _sync_header(self) -> dict[str, str]:
        return {SYNC_TOKEN_HEADER: str(next(self._sync))}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A raw ASGI app, so Starlette's router does not answer 405 in plain text."""
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async def endpoint(self, request: Request) -> Response:
        """Every response, errors included, is JSON and carries a sync token."""
        try:
            return await self._handle(request)
        except _HttpError as err:
            return self.respond(err.status, {"error": err.message})
        except TripkitError as err:
            # Redis unreachable, timed out, refused our password, protocol trouble.
            return self.respond(500, {"error": f"ERR {err.message}"})
        except ClientDisconnect:
            # The client left before sending its whole body (it gave up): nobody to answer.
            return self.respond(400, {"error": "ERR the client disconnected"})
        except Exception as exc:
            log.exception("REST gateway: unexpected error")
            return self.respond(500, {"error": f"ERR internal gateway error: {exc}"})

    async def _handle(self, request: Request) -> Response:
        if request.method not in _ALLOWED_METHODS:
            raise _HttpError(405, f"ERR method {request.method} not allowed")
        if not _check_token(request, self._token):
            raise _HttpError(401, AUTH_ERROR)
        fmt = reply_format(request.headers)
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        segments = [unquote_to_bytes(s) for s in raw_path.split(b"?", 1)[0].split(b"/") if s]
        options = _query_arguments(request)
        body = await _read_body(request, self._max)

        if segments and segments[0].lower() == b"subscribe":
            return await self._subscribe(request, segments[1:], body)
        if segments in ([b"pipeline"], [b"multi-exec"]):
            if request.method not in ("POST", "PUT"):
                raise _HttpError(405, f"ERR use POST for /{segments[0].decode()}")
            _no_query_arguments(options, f"/{segments[0].decode()}")
            commands = self._parse_batch(body)
            if segments == [b"multi-exec"]:
                # Upstash answers a transaction in JSON whatever the response format.
                return await self._multi_exec(commands, b64=fmt.b64)
            replies = await self._pipeline(commands)
            if fmt.resp2:
                return self.respond_resp2(200, b"".join(encode_reply(r) for r in replies))
            return self.respond(200, [_item(reply, b64=fmt.b64) for reply in replies])

        if segments:
            command: Command = segments
            if body and request.method in ("POST", "PUT"):
                command.append(body)  # path style with the value in the body
            command += options  # the arguments after the value: /set/k?EX=100
        else:
            _no_query_arguments(options, "a command in the body")
            if not body.strip():
                raise _HttpError(400, 'ERR empty command: POST a JSON array such as ["PING"]')
            command = _parse_command(_load_json(body), "command")
        reason = unsupported_reason(command)
        reply: Reply = ErrorReply(reason) if reason else await self.pool.execute(*command)
        status = 400 if isinstance(reply, ErrorReply) else 200
        if fmt.resp2:
            return self.respond_resp2(status, encode_reply(reply))
        if isinstance(reply, ErrorReply):
            raise _HttpError(400, str(reply))
        return self.respond(200, {"result": to_json(reply, b64=fmt.b64)})

    async def _subscribe(self, request: Request, channels: list[bytes], body: bytes) -> Response:
        """Upstash's pub/sub over REST: ``POST /subscribe/<channel>`` with ``Accept:
        text/event-stream`` streams ``data: subscribe,<channel>,1`` once Redis confirmed,
        then ``data: message,<channel>,<payload>`` per message, until the client leaves
        or Redis drops the connection (then the stream ends: subscribe again)."""
        if request.method != "POST":
            raise _HttpError(405, "ERR use POST for /subscribe/<channel>")
        if "text/event-stream" not in request.headers.get("accept", ""):
            raise _HttpError(
                400, "ERR SUBSCRIBE over REST streams events: send 'Accept: text/event-stream'"
            )
        if len(channels) != 1 or not channels[0]:
            raise _HttpError(400, "ERR subscribe to one channel per request: /subscribe/<channel>")
        if body.strip() not in (b"", b"[]"):
            raise _HttpError(400, "ERR /subscribe/<channel> takes no command in its body")
        conn = await self.pool.dedicated()
        try:
            reply = await conn.execute(b"SUBSCRIBE", channels[0])
        except BaseException:
            await conn.aclose()
            raise
        if isinstance(reply, ErrorReply) or not isinstance(reply, list) or len(reply) != 3:
            await conn.aclose()
            raise _HttpError(400, str(reply) if isinstance(reply, ErrorReply) else "ERR SUBSCRIBE")
        count = reply[2] if isinstance(reply[2], int) else 1
        return _SubscriptionResponse(conn, channels[0].decode("utf-8", "replace"), count)

    def _parse_batch(self, body: bytes) -> list[Command]:
        value = _load_json(body)
        if not isinstance(value, list) or not value:
            raise _HttpError(400, "ERR expected a non-empty JSON array of commands (arrays)")
        return [_parse_command(cmd, f"command {i + 1}") for i, cmd in enumerate(value)]

    async def _pipeline(self, commands: list[Command]) -> list[Reply]:
        """Not atomic: every command runs, each gets its own reply or error."""
        replies: list[Reply] = [None] * len(commands)
        to_send: list[tuple[int, Command]] = []
        for i, command in enumerate(commands):
            reason = unsupported_reason(command)
            if reason is not None:
                replies[i] = ErrorReply(reason)
            else:
                to_send.append((i, command))
        if to_send:
            answered = await self.pool.execute_many([cmd for _, cmd in to_send])
            for (i, _), reply in zip(to_send, answered, strict=True):
                replies[i] = reply
        return replies

    async def _multi_exec(self, commands: list[Command], *, b64: bool) -> Response:
        """MULTI, the commands, EXEC on one connection; queue-time errors abort it all."""
        for command in commands:
            reason = unsupported_reason(command)
            if reason is not None:
                raise _HttpError(400, f"EXECABORT Transaction discarded: {reason}")
        async with self.pool.connection() as conn:
            replies = await conn.execute_many([[b"MULTI"], *commands, [b"EXEC"]])
        multi, exec_reply = replies[0], replies[-1]
        if isinstance(multi, ErrorReply):
            raise _HttpError(400, str(multi))
        if isinstance(exec_reply, ErrorReply):
            raise _HttpError(400, str(exec_reply))  # EXECABORT ...: nothing ran
        if not isinstance(exec_reply, list):
            raise StoreError(f"unexpected EXEC reply {exec_reply!r}")
        return self.respond(200, [_item(reply, b64=b64) for reply in exec_reply])


class _SubscriptionResponse(EventSourceResponse):
    """The stream of one subscription; closes its Redis connection however it ends
    (the client left, Redis went away, the gateway shuts down)."""

    def __init__(self, conn: RespConnection, channel: str, count: int) -> None:
        # No keep-alive comments: Upstash's stream carries only the data lines.
        super().__init__(_messages(conn, channel, count), ping=0, sep="\n")
        self.conn = conn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.conn.aclose()


async def _messages(
    conn: RespConnection, channel: str, count: int
) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(data=f"subscribe,{channel},{count}", sep="\n")
    while True:
        try:
            reply = await conn.read_message()
        except StoreError as err:
            log.warning("REST gateway: subscription to %s ended: %s", channel, err.message)
            return
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            payload = reply[2]
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
            yield ServerSentEvent(data=f"message,{channel},{text}", sep="\n")


def _query_arguments(request: Request) -> Command:
    """Query parameters but ``_token``, in order, as the arguments they stand for.

    Upstash reads ``POST /set/k?EX=100`` (the value in the body) as ``SET k <body> EX 100``;
    a parameter without a value (``?NX``) is one argument.
    """
    query: bytes = request.scope.get("query_string", b"")
    arguments: Command = []
    # latin-1 both ways: every byte, escaped or not, reaches Redis unchanged.
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    for name, value in pairs:
        if name == _TOKEN_PARAM:
            continue
        arguments.append(name.encode("latin-1"))
        if value:
            arguments.append(value.encode("latin-1"))
    return arguments


def _no_query_arguments(arguments: Command, where: str) -> None:
    if arguments:
        names = ", ".join(a.decode("utf-8", "replace") for a in arguments[:3])
        raise _HttpError(
            400,
            f"ERR query parameters ({names}) only add arguments to a path-style command, "
            f"not to {where}; put them in the JSON array",
        )


def create_app(
    redis_url: str, token: str, *, max_request_bytes: int = MAX_REQUEST_BYTES
) -> Starlette:
    """The ASGI app: Upstash's REST protocol in front of the Redis at ``redis_url``."""
    gateway = _Gateway(redis_url, token, max_request_bytes=max_request_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    async def on_error(request: Request, exc: Exception) -> Response:
        return gateway.respond(500, {"error": "ERR internal gateway error"})

    return Starlette(
        routes=[Route("/{path:path}", gateway)],
        lifespan=lifespan,
        exception_handlers={Exception: on_error},
    )


def run_gateway(host: str, port: int, redis_url: str, token: str) -> None:
    """Serve until SIGINT/SIGTERM; print ``UPSTASH_REDIS_REST_URL=...`` once listening."""
    app = create_app(redis_url, token)
    sock = serving.listen(
        host,
        port,
        what="The REST gateway",
        hint="Is another gateway running there? Pick another --port.",
    )
    url = f"http://{host}:{sock.getsockname()[1]}"
    serving.run(app, sock, ready_key="UPSTASH_REDIS_REST_URL", url=url)


class BackgroundGateway(serving.ThreadedServer):
    """The gateway served by uvicorn in a daemon thread, for tests and notebooks.

    ``with BackgroundGateway(redis_url, token) as gw: httpx.post(gw.url, ...)``
    """

    what = "The REST gateway"
    thread_name = "tripkit-rest-gateway"

    def __init__(
        self, redis_url: str, token: str, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(create_app(redis_url, token), host=host, port=port)
        self.token = token

    def start_failed(self, reason: str) -> Exception:
        return StoreError(
            f"The REST gateway did not start on {self.host}:{self._requested_port}.",
            remedy="Is the port free? Pass port=0 to pick a free one.",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tripkit.devstack.rest_gateway",
        description="Serve Upstash's REST protocol in front of a Redis, on this machine.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8079, help="0 picks a free port")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--token", default=None, help=f"default: ${TOKEN_ENV}")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not args.redis_url:
        parser.error("--redis-url (or REDIS_URL) is required")
    if not token:
        parser.error(f"--token (or {TOKEN_ENV}) is required")
    try:
        run_gateway(args.host, args.port, args.redis_url, token)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
