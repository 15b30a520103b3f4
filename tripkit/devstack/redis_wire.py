"""A minimal asyncio RESP2 client, for the REST gateway only.

The gateway must hand Redis replies back exactly as Redis sent them. redis-py applies
response callbacks (``SET`` becomes ``True``) and cannot tell the simple string ``+OK``
from a bulk string ``"OK"``; Upstash's base64 mode encodes the second but not the first.
So this client keeps the RESP2 reply types apart and returns error replies as values
(inside EXEC and pipelines errors are per item), raising only for transport failures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

from tripkit.errors import ConfigError, RedisAuthError, RedisTimeout, RedisUnavailable, StoreError

DEFAULT_TIMEOUT = 5.0
_STREAM_LIMIT = 1 << 20  # longest status/error line accepted


class SimpleString(str):
    """A ``+...`` status reply, such as ``OK``, ``PONG`` or ``QUEUED``."""

    __slots__ = ()


class ErrorReply(str):
    """A ``-...`` error reply, returned as a value, never raised."""

    __slots__ = ()

    @property
    def code(self) -> str:
        """The leading word: ``ERR``, ``WRONGTYPE``, ``EXECABORT``, ..."""
        return self.split(" ", 1)[0]


class NullArray:
    """RESP2's null array ``*-1`` (a non-blocking ``XREAD`` with nothing new, ...).

    JSON shows it as null like the null bulk string ``$-1``; it is kept apart so that an
    ``Upstash-Response-Format: resp2`` answer is byte for byte what Redis sent.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "NULL_ARRAY"


NULL_ARRAY = NullArray()

Reply: TypeAlias = "SimpleString | ErrorReply | bytes | int | list[Reply] | NullArray | None"
Arg: TypeAlias = "str | bytes | bytearray | memoryview | int | float"


def encode_command(args: Sequence[Arg]) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    if not args:
        raise ValueError("a Redis command needs at least a name")
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes | bytearray | memoryview):
            data = bytes(arg)
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, bool):
            raise TypeError("booleans are ambiguous in Redis; send 0/1 or a string")
        elif isinstance(arg, int | float):
            data = repr(arg).encode("ascii")
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def encode_reply(reply: Reply) -> bytes:
    """A reply back in RESP2, as Redis itself would have written it."""
    if isinstance(reply, SimpleString):
        return b"+%b\r\n" % reply.encode("utf-8")
    if isinstance(reply, ErrorReply):
        return b"-%b\r\n" % reply.encode("utf-8")
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join(encode_reply(item) for item in reply)
    if isinstance(reply, NullArray):
        return b"*-1\r\n"
    return b"$-1\r\n"


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """Read one complete RESP2 reply (recursively for arrays)."""
    line = await reader.readuntil(b"\r\n")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return SimpleString(body.decode("utf-8", "replace"))
    if kind == b"-":
        return ErrorReply(body.decode("utf-8", "replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        if data[-2:] != b"\r\n":
            raise StoreError("Redis protocol error: bulk string not terminated by CRLF.")
        return data[:-2]
    if kind == b"*":
        count = int(body)
        if count < 0:
            return NULL_ARRAY
        return [await read_reply(reader) for _ in range(count)]
    raise StoreError(f"Redis protocol error: unexpected reply type {kind!r}.")


class RespConnection:
    """One TCP connection; a lock keeps concurrent callers from interleaving.

    Any transport failure, timeout or cancellation closes the connection: after a
    half-read reply its state is unknown, and a fresh connection is cheap.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        address: str,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._address = address
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._broken = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        password: str | None = None,
        *,
        username: str | None = None,
        db: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RespConnection:
        """Connect, authenticate and select the database."""
        address = f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=_STREAM_LIMIT)
        except TimeoutError:
            raise RedisTimeout(f"Connecting to Redis at {address} timed out.") from None
        except OSError as exc:
            raise RedisUnavailable(f"Cannot connect to Redis at {address}: {exc}.") from None
        conn = cls(reader, writer, address=address, timeout=timeout)
        try:
            if password is not None:
                auth: list[Arg] = (
                    ["AUTH", password]
                    if username is None
                    else [
                        "AUTH",
                        username,
                        password,
                    ]
                )
                reply = await conn.execute(*auth)
                if isinstance(reply, ErrorReply):
                    raise RedisAuthError(f"Redis at {address} refused the password: {reply}")
            if db:
                reply = await conn.execute("SELECT", db)
                if isinstance(reply, ErrorReply):
                    raise StoreError(f"Redis at {address} refused SELECT {db}: {reply}")
        except BaseException:
            await conn.aclose()
            raise
        return conn

    @property
    def closed(self) -> bool:
        """True once closed, broken, or closed by the server while idle."""
        return self._broken or self._writer.is_closing() or self._reader.at_eof()

    async def execute(self, *args: Arg) -> Reply:
        """Send one command and return its reply; error replies are returned, not raised."""
        (reply,) = await self.execute_many([args])
        return reply

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        """Pipeline: write all commands at once, then read one reply per command."""
        payload = b"".join(encode_command(cmd) for cmd in commands)
        async with self._lock:
            if self.closed:
                raise RedisUnavailable(f"The connection to Redis at {self._address} is closed.")
            try:
                async with asyncio.timeout(self.timeout):
                    self._writer.write(payload)
                    await self._writer.drain()
                    return [await read_reply(self._reader) for _ in commands]
            except TimeoutError:
                self._break()
                raise RedisTimeout(
                    f"Redis at {self._address} did not answer within {self.timeout:g} s."
                ) from None
            except (OSError, asyncio.IncompleteReadError) as exc:
                self._break()
                raise RedisUnavailable(
                    f"Lost the connection to Redis at {self._address}: {exc or type(exc).__name__}."
                ) from None
            except (ValueError, asyncio.LimitOverrunError) as exc:
                self._break()
                raise StoreError(f"Redis protocol error from {self._address}: {exc}.") from None
            except BaseException:
                self._break()
                raise

    async def read_message(self) -> Reply:
        """The next message on a subscribed connection, however long it takes (a
        subscription is silent until someone publishes)."""
        async with self._lock:
            if self.closed:
                raise RedisUnavailable(f"The connection to Redis at {self._address} is closed.")
            try:
                return await read_reply(self._reader)
            except (OSError, asyncio.IncompleteReadError) as exc:
                self._break()
                raise RedisUnavailable(
                    f"Lost the connection to Redis at {self._address}: {exc or type(exc).__name__}."
                ) from None
            except (ValueError, asyncio.LimitOverrunError) as exc:
                self._break()
                raise StoreError(f"Redis protocol error from {self._address}: {exc}.") from None
            except BaseException:
                self._break()
                raise

    def _break(self) -> None:
        """Close without waiting: this may run while the task is being cancelled."""
        self._broken = True
        if not self._writer.is_closing():
            self._writer.close()

    async def aclose(self) -> None:
        self._broken = True
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._writer.wait_closed()


class RespPool:
    """A few connections shared by concurrent requests; connects lazily.

    Nothing is opened at construction, so a gateway can start before Redis does and
    recovers when Redis comes back: broken connections are dropped, not reused.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        max_size: int = 4,
    ) -> None:
        self.host = host
        self.port = port
        self._password = password
        self._username = username
        self._db = db
        self.timeout = timeout
        self._idle: list[RespConnection] = []
        self._slots = asyncio.Semaphore(max_size)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT, max_size: int = 4) -> RespPool:
        """``redis://[[user]:password@]host[:port][/db]``; TLS (``rediss://``) is not needed."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ConfigError(
                f"Unsupported Redis URL scheme {parts.scheme!r}.",
                remedy="The local gateway expects redis://[:password@]host:port/db.",
            )
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError:
            raise ConfigError(
                "Malformed Redis URL (port and database must be numbers).",
                remedy="Use redis://[:password@]host:port/db.",
            ) from None
        return cls(
            parts.hostname or "127.0.0.1",
            port,
            password=unquote(parts.password) if parts.password else None,
            username=unquote(parts.username) if parts.username else None,
            db=db,
            timeout=timeout,
            max_size=max_size,
        )

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[RespConnection]:
        """Borrow one connection exclusively (e.g. for MULTI ... EXEC)."""
        if self._closed:
            raise RedisUnavailable("The Redis connection pool is closed.")
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                candidate = self._idle.pop()
                if candidate.closed:
                    await candidate.aclose()
                else:
                    conn = candidate
            if conn is None:
                conn = await RespConnection.open(
                    self.host,
                    self.port,
                    self._password,
                    username=self._username,
                    db=self._db,
                    timeout=self.timeout,
                )
            try:
                yield conn
            finally:
                if conn.closed or self._closed:
                    await conn.aclose()
                else:
                    self._idle.append(conn)

    async def dedicated(self) -> RespConnection:
        """A connection of the caller's own, outside the pool (a subscription holds
        its connection for as long as it lasts); the caller closes it."""
        if self._closed:
            raise RedisUnavailable("The Redis connection pool is closed.")
        return await RespConnection.open(
            self.host,
            self.port,
            self._password,
            username=self._username,
            db=self._db,
            timeout=self.timeout,
        )

    async def execute(self, *args: Arg) -> Reply:
        async with self.connection() as conn:
            return await conn.execute(*args)

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        async with self.connection() as conn:
            return await conn.execute_many(commands)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()
