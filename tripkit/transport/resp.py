"""RESP over TCP or TLS, through redis-py's asyncio client.

redis-py is configured so that it never retries by itself (its default retries any
command, writes included, up to three times); tripkit retries only commands the caller
marks ``retry_safe``, once, after a connection failure (never after a timeout). Response
callbacks are switched off so replies have the same shapes as on the REST transport.

The pool is bounded (redis-py's default opens a new connection for every concurrent
command, so a burst becomes a burst of connections to Upstash), and calls pass the same
:class:`~tripkit.gate.Gate` as on REST: a fixed number in flight, a short wait
for a slot, and a caller's cancellation never lands inside redis-py.

A subscription gets a connection of its own, outside the pool (a subscribed RESP2
connection can run nothing else), and redis-py may not reconnect it: its silent
reconnect-and-resubscribe would hide the gap in which messages were lost, and the owner
must know about that gap to catch up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tripkit.config import Settings, mask_url
from tripkit.errors import (
    CommandError,
    ConfigError,
    RedisTimeout,
    RedisUnavailable,
    StoreError,
)
from tripkit.transport import (
    Arg,
    CommandCounter,
    Reply,
    error_from_reply,
    keepalive_options,
    redis_gate,
)


def _normalize(value: Any) -> Reply:
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, bool):  # defensive: callbacks are off, but never leak bools
        return int(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | int) or value is None:
        return value
    if isinstance(value, rexc.ResponseError):
        raise error_from_reply(str(value))
    raise StoreError(f"Unexpected reply type from Redis: {type(value).__name__}")


def _translate(exc: Exception, where: str) -> StoreError:
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthorizationError):
        return error_from_reply("WRONGPASS")
    if isinstance(exc, rexc.TimeoutError):
        return RedisTimeout(f"Redis at {where} did not answer in time.")
    if isinstance(exc, rexc.ConnectionError):
        return RedisUnavailable(f"Cannot reach Redis at {where}: {str(exc).rstrip('.')}.")
    if isinstance(exc, rexc.ResponseError):
        return error_from_reply(str(exc))
    return StoreError(f"Redis at {where} failed: {str(exc).rstrip('.')}.")


class RespTransport:
    """One connection pool to one Redis, over ``redis://``, ``rediss://`` or ``unix://``."""

    name = "resp"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        max_connections: int = 50,
        pool_wait: float = 1.0,
    ) -> None:
        self.counter = CommandCounter()
        self._url = url
        self._where = mask_url(url)
        self.timeout = timeout
        self.gate = redis_gate(f"Redis at {self._where}", max_connections, pool_wait)
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=pool_wait,  # a backstop: the gate admits no more than the pool holds
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
                protocol=2,
                # no CLIENT SETINFO on connect: Upstash would bill two commands per connection
                driver_info=None,
            )
        except ValueError:  # redis-py's message may quote part of the password
            raise ConfigError(
                "REDIS_URL is malformed.",
                remedy="Use redis://[user:password@]host:port[/db]; %-encode special characters.",
            ) from None
        self._client = aioredis.Redis(
            connection_pool=pool, retry=Retry(NoBackoff(), 0), retry_on_error=[]
        )
        self._client.response_callbacks.clear()

    @classmethod
    def from_settings(cls, settings: Settings) -> RespTransport:
        if settings.redis_url is None:
            raise ConfigError("REDIS_URL is not set.", remedy="Set it, or use the REST transport.")
        return cls(
            settings.redis_url.get_secret_value(),
            timeout=settings.redis_timeout,
            max_connections=settings.redis_max_connections,
            pool_wait=settings.redis_pool_wait,
        )

    def _translate(self, exc: Exception) -> StoreError:
        return _translate(exc, self._where)

    async def execute(self, *args: Arg, retry_safe: bool = False) -> Reply:
        return await self.gate.run(lambda: self._execute(args, retry_safe))

    async def _execute(self, args: tuple[Arg, ...], retry_safe: bool) -> Reply:
        attempts = 2 if retry_safe else 1
        for attempt in range(attempts):
            self.counter.add(str(args[0]))
            try:
                return _normalize(await self._client.execute_command(*args))  # type: ignore[no-untyped-call]
            except rexc.ConnectionError as exc:
                if attempt + 1 < attempts:
                    continue
                raise self._translate(exc) from None
            except rexc.RedisError as exc:
                raise self._translate(exc) from None
        raise AssertionError("unreachable")

    async def pipeline(self, *commands: list[Arg]) -> list[Reply | CommandError]:
        return await self.gate.run(lambda: self._pipeline(commands))

    async def _pipeline(self, commands: tuple[list[Arg], ...]) -> list[Reply | CommandError]:
        for command in commands:
            self.counter.add(str(command[0]))
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            raw = await pipe.execute(raise_on_error=False)
        except rexc.RedisError as exc:
            raise self._translate(exc) from None
        out: list[Reply | CommandError] = []
        for item in raw:
            if isinstance(item, rexc.ResponseError):
                err = error_from_reply(str(item))
                if not isinstance(err, CommandError):
                    raise err
                out.append(err)
            else:
                out.append(_normalize(item))
        return out

    async def subscribe(self, channel: str) -> RespSubscription:
        self.counter.add("SUBSCRIBE")
        return await RespSubscription.open(self._url, channel, timeout=self.timeout)

    async def aclose(self) -> None:
        await self.gate.drain(self.timeout)
        await self._client.aclose()
        await self._client.connection_pool.disconnect()


class RespSubscription:
    """``SUBSCRIBE channel`` on a connection of its own (see
    :class:`tripkit.transport.Subscription`)."""

    def __init__(self, client: aioredis.Redis, pubsub: Any, where: str) -> None:
        self._client = client
        self._pubsub = pubsub
        self._where = where

    @classmethod
    async def open(cls, url: str, channel: str, *, timeout: float) -> RespSubscription:
        # No retries, not even the reconnect redis-py runs before giving up (an empty
        # supported_errors), so a lost connection always reaches the owner.
        never = Retry(NoBackoff(), 0, supported_errors=())
        pool = aioredis.ConnectionPool.from_url(
            url,
            max_connections=1,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
            socket_keepalive_options=keepalive_options(),
            retry=never,
            decode_responses=False,
            protocol=2,
            driver_info=None,
        )
        client = aioredis.Redis(connection_pool=pool, retry=never, retry_on_error=[])
        subscription = cls(client, client.pubsub(), mask_url(url))
        try:
            async with asyncio.timeout(timeout):
                await subscription._pubsub.subscribe(channel)
                confirmed = await subscription._pubsub.get_message(timeout=timeout)
        except TimeoutError:
            await subscription.aclose()
            raise RedisTimeout(
                f"Redis at {subscription._where} did not confirm the subscription in time."
            ) from None
        except rexc.RedisError as exc:
            await subscription.aclose()
            raise _translate(exc, subscription._where) from None
        except BaseException:
            await subscription.aclose()
            raise
        if not confirmed or confirmed.get("type") != "subscribe":
            await subscription.aclose()
            raise RedisUnavailable(f"Redis at {subscription._where} did not confirm SUBSCRIBE.")
        return subscription

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)  # blocks: math.inf
            except rexc.RedisError as exc:
                raise _translate(exc, self._where) from None
            if message is not None and message.get("type") == "message":
                data = message["data"]
                yield data if isinstance(data, bytes) else str(data).encode()

    async def aclose(self) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()
        await self._client.connection_pool.disconnect()
