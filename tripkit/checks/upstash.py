"""Step 1: the session store's Redis, over Upstash REST (``upstash.*``, the guide's way)
and over ``REDIS_URL`` (``redis.ping``), with tripkit's own Redis transports.

Nothing is left behind: the round trip writes a throw-away key with a 60 s TTL and
deletes it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator

from tripkit.checks.core import STEP_1, CheckStatus, Context, Outcome, Skip, check, secret
from tripkit.checks.probes import elapsed_ms
from tripkit.config import mask_url
from tripkit.errors import CommandError, RedisTimeout, RedisUnavailable, TripkitError
from tripkit.transport import Transport, connect
from tripkit.usage.plans import load_plans

#: Upstash Free's data size, when tripkit/data/plan_limits.json (the report's plan data,
#: with sources and dates) cannot be read: the guide's and Upstash's 256 MB.
FREE_TIER_DATA_BYTES = 256 * 1024 * 1024
FREE_TIER_SOURCE = "Upstash Redis billing docs, 2026-06-18"
MEMORY_WARN_FRACTION = 0.8
_SLOW_REDIS = RedisTimeout.remedy


@contextlib.asynccontextmanager
async def _redis(ctx: Context, *, resp: bool = False) -> AsyncIterator[tuple[Transport, str]]:
    """A transport to the store's Redis and where it is, closed on exit.

    Upstash REST when it is configured (the guide's setup; the app itself prefers
    REDIS_URL), else REDIS_URL; with ``resp``, REDIS_URL. Bounded by the checks' timeout.
    """
    s = ctx.need_settings()
    rest = not resp and s.upstash_redis_rest_url is not None
    # "auto" picks REDIS_URL here, or raises "No Redis is configured" when it is unset too.
    update = {"redis_timeout": ctx.timeout, "redis_transport": "rest" if rest else "auto"}
    transport = connect(s.model_copy(update=update))
    if rest:
        where = f"Upstash REST at {urllib.parse.urlsplit(s.upstash_redis_rest_url or '').netloc}"
    else:  # redis.ping's title already names REDIS_URL
        where = ("" if resp else "REDIS_URL ") + mask_url(secret(s.redis_url) or "")
    try:
        yield transport, where
    finally:
        await transport.aclose()


@check("upstash.ping", STEP_1, "Upstash REST: PING", _SLOW_REDIS)
async def upstash_ping(ctx: Context) -> Outcome:
    s = ctx.need_settings()
    if s.upstash_redis_rest_url is None and s.redis_url is not None:
        raise Skip("Upstash REST is not configured; REDIS_URL is checked by redis.ping.")
    return await _ping(ctx)


async def _ping(ctx: Context, *, resp: bool = False) -> Outcome:
    async with _redis(ctx, resp=resp) as (transport, where):
        started = time.perf_counter()
        reply = await transport.execute("PING", retry_safe=True)
        ms = elapsed_ms(started)
    if reply != b"PONG":
        return CheckStatus.FAIL, f"PING answered {reply!r} at {where}.", RedisUnavailable.remedy
    return CheckStatus.PASS, f"PONG in {ms:.1f} ms from {where}.", ""


@check("upstash.roundtrip", STEP_1, "Upstash REST: write, read and delete with a TTL", _SLOW_REDIS)
async def upstash_roundtrip(ctx: Context) -> Outcome:
    key = f"{ctx.need_settings().key_prefix}:check:{secrets.token_hex(8)}"
    value = secrets.token_hex(8)
    async with _redis(ctx) as (transport, where):
        written = False
        try:
            started = time.perf_counter()
            if await transport.execute("SET", key, value, "EX", 60) != b"OK":
                return (
                    CheckStatus.FAIL,
                    f"SET did not answer OK at {where}.",
                    RedisUnavailable.remedy,
                )
            written = True
            read = await transport.execute("GET", key, retry_safe=True)
            ttl = await transport.execute("TTL", key, retry_safe=True)
            deleted = await transport.execute("DEL", key, retry_safe=True)
            written = False
            ms = elapsed_ms(started)
        except CommandError as exc:
            if "NOPERM" in exc.message.upper():
                return (
                    CheckStatus.FAIL,
                    f"The token may not write: {exc.message}",
                    "Use the database's standard token, not the read-only one "
                    "(Upstash console -> 'REST API').",
                )
            raise
        finally:
            if written:  # best effort: the key expires in 60 s anyway
                with contextlib.suppress(TripkitError):
                    await transport.execute("DEL", key)
    if read != value.encode():
        return (
            CheckStatus.FAIL,
            f"GET returned another value than SET wrote at {where}.",
            "Is this a replica that lags, or a read-only token? Check the Upstash console.",
        )
    if not isinstance(ttl, int) or not 0 < ttl <= 60:
        return (
            CheckStatus.FAIL,
            f"The key's TTL is {ttl!r}, not 1-60 s, at {where}: sessions would not expire.",
            "Check that the server honours EX (an eviction or persistence setting?).",
        )
    if deleted != 1:
        return CheckStatus.WARN, f"DEL removed {deleted!r} keys, not 1, at {where}.", ""
    return (
        CheckStatus.PASS,
        f"SET EX 60, GET, TTL ({ttl} s), DEL in {ms:.1f} ms over {where} (4 billed commands).",
        "",
    )


def _parse_info(text: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[name.strip()] = value.strip()
    return out


def free_tier_data_size() -> tuple[int, str]:
    """Upstash Free's data size in bytes and its source, from the plan data if present."""
    try:
        item = load_plans()["profiles"]["current"]["limits"]["redis_storage_bytes"]
        return int(item["value"]), f"{item['source']}, {item['date']}"
    except (OSError, ValueError, KeyError, TypeError):
        return FREE_TIER_DATA_BYTES, FREE_TIER_SOURCE


@check("upstash.memory", STEP_1, "Upstash: data size against the 256 MB free tier", _SLOW_REDIS)
async def upstash_memory(ctx: Context) -> Outcome:
    async with _redis(ctx) as (transport, where):
        try:
            info = await transport.execute("INFO", "memory", retry_safe=True)
        except CommandError:
            info = None
        used = _parse_info(info).get("used_memory") if isinstance(info, bytes) else None
        if used is None or not used.isdigit():
            keys = await transport.execute("DBSIZE", retry_safe=True)
            return (
                CheckStatus.PASS,
                f"{keys!r} keys at {where}; INFO memory is not allowed, so the size is unknown.",
                "",
            )
    used_bytes = int(used)
    limit, source = free_tier_data_size()
    share = used_bytes / limit
    detail = (
        f"{used_bytes / 1024**2:.1f} MB in use at {where}: {share:.1%} of the "
        f"{limit / 1024**2:.0f} MB free-tier data size."
    )
    if share >= 1:
        return (
            CheckStatus.FAIL,
            detail,
            "The free tier's data size is used up, so writes fail: delete keys, or raise the "
            f"plan in the Upstash console (limit: {source}).",
        )
    if share >= MEMORY_WARN_FRACTION:
        return (
            CheckStatus.WARN,
            detail,
            "Above 80 % of the free tier's data size: check for keys without a TTL, or raise "
            f"the plan (limit: {source}).",
        )
    return CheckStatus.PASS, detail, ""


@check("redis.ping", STEP_1, "REDIS_URL: PING over RESP", _SLOW_REDIS)
async def redis_ping(ctx: Context) -> Outcome:
    if ctx.need_settings().redis_url is None:
        raise Skip("REDIS_URL is not set (optional: Upstash REST is the guide's way).")
    return await _ping(ctx, resp=True)
