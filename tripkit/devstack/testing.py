"""Helpers for the tests and the benchmarks, kept out of the stand-ins they measure.

``tripkit demo`` uses :class:`RedisCommandCounter` too, to print what a generation cost.
:func:`free_port` is defined in :mod:`tripkit.devstack.serving` (the servers and the stack
need it) and re-exported here, so tests and benchmarks import their helpers from one place.
"""

from __future__ import annotations

import time

import redis

from tripkit.devstack.serving import free_port

__all__ = ["RedisCommandCounter", "free_port"]


class RedisCommandCounter:
    """What the Redis server executed, by command (INFO commandstats), from a reset on.

    One quiet connection (RESP2, no client-info handshake) so the measurement adds only
    CONFIG and INFO, which are left out of the counts.
    """

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, protocol=2, driver_info=None)

    def reset(self) -> None:
        self._client.config_resetstat()

    def counts(self) -> dict[str, int]:
        stats = self._client.info("commandstats")
        out: dict[str, int] = {}
        for name, value in stats.items():
            # Redis 7+ and Valkey count subcommands apart (``config|resetstat``).
            command = name.removeprefix("cmdstat_").split("|", 1)[0].upper()
            if command not in ("INFO", "CONFIG"):
                out[command] = out.get(command, 0) + int(value["calls"])
        return out

    def settled(self, quiet: float = 0.5, timeout: float = 10.0) -> dict[str, int]:
        """The counts once Redis saw no command for ``quiet`` seconds (at most
        ``timeout``): a client sees the final event just before the worker's last write,
        its run record."""
        deadline = time.monotonic() + timeout
        last = self.counts()
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.counts()
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                break
        return last

    def close(self) -> None:
        self._client.close()
