"""How tripkit talks to Redis: one small interface, two transports.

- :mod:`tripkit.transport.resp`: RESP over TCP/TLS via redis-py (``REDIS_URL``: a local
  Redis, Upstash over ``rediss://``, any Redis or Valkey);
- :mod:`tripkit.transport.rest`: Upstash's REST protocol over HTTPS
  (``UPSTASH_REDIS_REST_URL`` + ``UPSTASH_REDIS_REST_TOKEN``).

Both return the same reply shapes (strings as ``bytes``, integers, ``None``, lists), raise
the same typed errors, and count every command they send, by name, so the cost of an
operation can be stated in Redis commands (what Upstash bills). Both can also subscribe
to a pub/sub channel: RESP on a connection of its own, REST through Upstash's SSE
endpoint ``POST /subscribe/<channel>``.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Protocol, TypeAlias

from tripkit.config import Settings
from tripkit.errors import CommandError, QuotaExceeded, RedisAuthError, RedisBusy, StoreError
from tripkit.gate import Gate

Arg = str | bytes | int | float
Reply: TypeAlias = "bytes | int | list[Reply] | None"


class CommandCounter:
    """Counts the commands a transport sent, by upper-case command name."""

    def __init__(self) -> None:
        self.by_name: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.by_name[name.upper()] += n

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def snapshot(self) -> Counter[str]:
        return Counter(self.by_name)

    def since(self, snapshot: Counter[str]) -> Counter[str]:
        """The commands sent after ``snapshot`` was taken."""
        return self.by_name - snapshot

    def reset(self) -> None:
        self.by_name.clear()


class Subscription(Protocol):
    """A confirmed subscription to one channel: its messages' payloads, in order.

    Iterating raises a :class:`~tripkit.errors.StoreError` (``RedisUnavailable``) when
    the subscription is lost; messages published meanwhile are gone (pub/sub keeps no
    history), so the owner re-reads what it follows after subscribing again.
    """

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """What the session store needs from a Redis connection."""

    name: str
    counter: CommandCounter

    async def execute(self, *args: Arg, retry_safe: bool = False) -> Reply:
        """Send one command. ``retry_safe``: the caller knows a repeat is harmless, so
        one connection-level failure may be retried; otherwise nothing is retried."""
        ...

    async def pipeline(self, *commands: list[Arg]) -> list[Reply | CommandError]:
        """Send several commands in one round trip (not atomic). A failing command gives
        a :class:`CommandError` in its place; the other results are kept."""
        ...

    async def subscribe(self, channel: str) -> Subscription:
        """``SUBSCRIBE channel`` on a connection of its own (one command), returned once
        Redis confirmed it, so nothing published afterwards is missed."""
        ...

    async def aclose(self) -> None: ...


def error_from_reply(message: str) -> StoreError:
    """Turn a Redis/Upstash error message into the typed error a user can act on."""
    upper = message.upper()
    if upper.startswith("WRONGPASS") or upper.startswith("NOAUTH") or "INVALID PASSWORD" in upper:
        return RedisAuthError("Redis refused the credentials (WRONGPASS).")
    if "MAX DAILY REQUEST LIMIT EXCEEDED" in upper:
        return QuotaExceeded("Upstash's daily request limit is exceeded.")
    if "MAX REQUESTS LIMIT EXCEEDED" in upper or "MAX REQUEST LIMIT EXCEEDED" in upper:
        return QuotaExceeded("Upstash's request limit is exceeded.")
    # Redis error text is about the command, never the credentials, so it is safe to show.
    return CommandError(f"Redis rejected a command: {message[:300]}")


def keepalive_options() -> dict[int, int]:
    """TCP keep-alive for a subscription's connection, which may stay idle for minutes:
    a peer that vanished (a dropped NAT mapping, a dead host) is noticed within about a
    minute instead of the two hours of Linux's defaults. A stopped but living Redis
    still answers the probes, so a frozen server is not mistaken for a dead one."""
    wanted = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    return {getattr(socket, name): value for name, value in wanted if hasattr(socket, name)}


def redis_gate(where: str, max_connections: int, pool_wait: float) -> Gate:
    """The gate in front of a transport's pool (see :mod:`tripkit.gate`): a caller that
    finds all ``max_connections`` busy for ``pool_wait`` s gets :class:`RedisBusy`."""
    return Gate(max_connections, pool_wait, busy=lambda why: RedisBusy(f"{where}: {why}."))


def connect(settings: Settings) -> Transport:
    """The transport the settings ask for (see :attr:`Settings.redis_transport_name`)."""
    if settings.redis_transport_name == "resp":
        from tripkit.transport.resp import RespTransport

        return RespTransport.from_settings(settings)
    from tripkit.transport.rest import RestTransport

    return RestTransport.from_settings(settings)
