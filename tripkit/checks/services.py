"""The service checks: Redis, Inngest, the model API and the app, each measured against
the real service with the real clients (tripkit's Redis transports, the ``inngest`` SDK,
the ``openai`` client).

Nothing is started: the Redis round trip uses a throw-away key with a 60 s TTL, and the
event sent to Inngest (:data:`PING_EVENT`) triggers no function.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tripkit import signing
from tripkit.checks.core import (
    OPENAI_DEFAULT_BASE,
    STEP_1,
    STEP_2,
    STEP_4,
    STEP_5,
    CheckStatus,
    Context,
    Outcome,
    Skip,
    check,
    secret,
)
from tripkit.config import mask_url
from tripkit.constants import EVENT_NAME, FUNCTION_NAME, FUNCTION_SLUG, SERVE_PATH
from tripkit.errors import CommandError, RedisTimeout, RedisUnavailable, TripkitError
from tripkit.transport import Transport, connect
from tripkit.usage.plans import load_plans

#: Upstash Free's data size, when tripkit/data/plan_limits.json (the report's plan data,
#: with sources and dates) cannot be read: the guide's and Upstash's 256 MB.
FREE_TIER_DATA_BYTES = 256 * 1024 * 1024
FREE_TIER_SOURCE = "Upstash Redis billing docs, 2026-06-18"
MEMORY_WARN_FRACTION = 0.8

#: An event no function listens to: proves the event key without starting a run.
PING_EVENT = "tripkit/check.ping"

DASHBOARD_REMEDY = (
    "In the Inngest dashboard: Apps -> special-trips should show 'Endpoint connected', "
    "'Function \"Generate Trip Bundles\" discovered' and 'Status: Active'. If not: Manage -> "
    "Endpoints -> Add Endpoint https://your-vercel-url.vercel.app/api/inngest, then Sync."
)
_SLOW_REDIS = RedisTimeout.remedy
_SLOW_APP = "The app did not answer in time: is it deployed and running?"


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# --- Redis ---------------------------------------------------------------------------------


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
        ms = _ms(started)
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
            ms = _ms(started)
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


# --- Inngest --------------------------------------------------------------------------------


@check(
    "inngest.event_api",
    STEP_2,
    "Inngest event API: the event key is accepted (no run started)",
    "Inngest's event API did not answer in time: check INNGEST_BASE_URL and the network.",
)
async def inngest_event_api(ctx: Context) -> Outcome:
    import inngest

    from tripkit.trigger import inngest_client

    s = ctx.need_settings()
    if s.inngest_signing_key is not None and s.inngest_event_key is None:
        return (
            CheckStatus.FAIL,
            "INNGEST_EVENT_KEY is not set: in cloud mode (a signing key is set) the app cannot "
            "send the event that starts a run.",
            "Inngest -> Settings -> Event Keys: copy the event key into INNGEST_EVENT_KEY "
            "(.env.local and Vercel).",
        )
    client = inngest_client(s)
    origin = str(client.event_api_origin).rstrip("/")
    started = time.perf_counter()
    try:
        ids = await client.send(inngest.Event(name=PING_EVENT, data={"check": "tripkit"}))
    except Exception as exc:
        text = str(exc).strip() or type(exc).__name__
        if "never received response" in text.lower():
            return (
                CheckStatus.FAIL,
                f"Inngest's event API at {origin} did not answer.",
                "Check INNGEST_BASE_URL (or the network to Inngest Cloud); locally, is "
                "`tripkit dev` (or `npx inngest-cli dev`) running?",
            )
        return (
            CheckStatus.FAIL,
            f"Inngest refused the event at {origin}: {text[:200]}",
            "Check INNGEST_EVENT_KEY: copy the event key from Inngest -> Settings -> Event Keys "
            "(.env.local and Vercel).",
        )
    ms = _ms(started)
    if not ids:
        return (
            CheckStatus.FAIL,
            f"Inngest at {origin} accepted the request but returned no event id.",
            "Check INNGEST_EVENT_KEY and INNGEST_BASE_URL.",
        )
    return (
        CheckStatus.PASS,
        f"Event accepted ({len(ids)} id) in {ms:.1f} ms at {origin}; no function listens to "
        f"{PING_EVENT}, so no run started.",
        "",
    )


async def _get(
    ctx: Context, url: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, float]:
    """The response and how long it took, in ms; an unreachable URL is a FAIL."""
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=ctx.timeout, follow_redirects=True) as http:
            return await http.get(url, headers=headers), _ms(started)
    except httpx.HTTPError as exc:
        raise _Unreachable(url, exc, ctx.timeout) from None


class _Unreachable(TripkitError):
    def __init__(self, url: str, exc: httpx.HTTPError, timeout: float) -> None:
        what = (
            f"{url} did not answer within {timeout:g} s"
            if isinstance(exc, httpx.TimeoutException)
            else f"Cannot reach {url}: {type(exc).__name__}"
        )
        super().__init__(
            what + ".",
            remedy="Is the app deployed (Step 3) and running? Locally: is `tripkit dev` running? "
            "Check the Vercel deployment logs.",
        )


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _sdk_answered(response: httpx.Response) -> bool:
    return "x-inngest-sdk-handled" in response.headers or "x-inngest-sdk" in response.headers


def _not_sdk(url: str, response: httpx.Response) -> Outcome:
    return (
        CheckStatus.FAIL,
        f"{url} answered HTTP {response.status_code}, not from the Inngest SDK.",
        "Check Vercel function logs for /api/inngest route. If Vercel Deployment Protection "
        "is on, Inngest cannot reach the endpoint either: allow it (Protection Bypass for "
        "Automation).",
    )


_SET_APP_SIGNING_KEY = (
    "Set INNGEST_SIGNING_KEY in the app's environment (Vercel Environment Variables, all "
    "environments) and redeploy."
)


async def _signed_inspection(ctx: Context, base: str, key: str) -> tuple[httpx.Response, float]:
    return await _get(ctx, base + SERVE_PATH, {signing.HEADER: signing.sign(b"", key)})


@check(
    "inngest.serve",
    STEP_4,
    "The app's /api/inngest answers in the expected mode with its function",
    _SLOW_APP,
)
async def inngest_serve(ctx: Context) -> Outcome:
    s = ctx.need_settings()
    base = ctx.need_serve_base()
    url = base + SERVE_PATH
    response, ms = await _get(ctx, url)
    if not _sdk_answered(response):
        return _not_sdk(url, response)
    key = secret(s.inngest_signing_key)
    body = _json(response) or {}
    if response.status_code == 200 and body.get("mode") == "dev":
        if key is not None:
            return (
                CheckStatus.FAIL,
                f"{url} runs in dev mode (no signing key in its environment) in {ms:.0f} ms; "
                "Inngest Cloud cannot call it.",
                _SET_APP_SIGNING_KEY,
            )
        return _count_outcome(url, "dev", body, ms)
    if response.status_code == 401:
        if key is None:
            return (
                CheckStatus.WARN,
                f"{url} runs in signed cloud mode, but INNGEST_SIGNING_KEY is not set here, so "
                "the endpoint cannot be inspected further.",
                "Set INNGEST_SIGNING_KEY here to the app's key to check it.",
            )
        signed, _ = await _signed_inspection(ctx, base, key)
        inspected = _json(signed) or {}
        if signed.status_code == 200 and inspected.get("authentication_succeeded") is True:
            return _count_outcome(url, "cloud", inspected, ms)
        return (
            CheckStatus.PASS,
            f"{url} answered in {ms:.0f} ms in cloud mode (unsigned requests refused); its "
            "function count needs a matching signature (see inngest.signing).",
            "",
        )
    return (
        CheckStatus.FAIL,
        f"{url} answered HTTP {response.status_code}.",
        "Check Vercel function logs for /api/inngest route.",
    )


def _count_outcome(url: str, mode: str, body: dict[str, Any], ms: float) -> Outcome:
    count = body.get("function_count")
    detail = f"{url} answered in {ms:.0f} ms: {mode} mode, {count} function(s)"
    if not isinstance(count, int) or count < 1:
        return (
            CheckStatus.FAIL,
            detail + ".",
            "The app serves no Inngest function: check that /api/inngest serves "
            "generate-bundles, then redeploy.",
        )
    if mode == "cloud" and body.get("has_event_key") is False:
        return (
            CheckStatus.WARN,
            detail + "; the app has no INNGEST_EVENT_KEY, so it cannot start runs.",
            "Set INNGEST_EVENT_KEY in the app's environment (Vercel) and redeploy.",
        )
    return CheckStatus.PASS, detail + ".", ""


@check(
    "inngest.function",
    STEP_4,
    "generate-bundles is registered with Inngest",
    "The Inngest server did not answer in time.",
)
async def inngest_function(ctx: Context) -> Outcome:
    s = ctx.need_settings()
    if s.inngest_base_url is None:
        raise Skip("Inngest Cloud: the function list is in the dashboard.", DASHBOARD_REMEDY)
    url = f"{s.inngest_base_url}/v1/functions"
    response, _ = await _get(ctx, url)
    if response.status_code == 404:
        raise Skip(
            f"The Inngest server at {s.inngest_base_url} does not list functions.",
            f"Open its UI ({s.inngest_base_url}) and look for 'Generate Trip Bundles'.",
        )
    body = _json(response)
    data = body.get("data") if body else None
    if response.status_code != 200 or not isinstance(data, list):
        return (
            CheckStatus.FAIL,
            f"{url} answered HTTP {response.status_code} without a function list.",
            "Is INNGEST_BASE_URL the Inngest server (locally: the URL `tripkit dev` prints)?",
        )
    wanted = FUNCTION_SLUG
    found = next((f for f in data if isinstance(f, dict) and f.get("id") == wanted), None)
    sync_remedy = (
        "Sync the app so Inngest discovers its function (Inngest: Manage -> Endpoints -> "
        "Sync; locally `tripkit dev` syncs on start, or POST {INNGEST_BASE_URL}/_control/sync)."
    )
    if found is None:
        return (
            CheckStatus.FAIL,
            f"'{FUNCTION_NAME}' ({wanted}) is not registered at {s.inngest_base_url} "
            f"({len(data)} function(s) are).",
            sync_remedy,
        )
    triggers = [t.get("event") for t in found.get("triggers", []) if isinstance(t, dict)]
    endpoint = str(found.get("url", "")).split("?")[0]
    detail = (
        f"'{found.get('name')}' registered, triggered by {', '.join(map(str, triggers))}, "
        f"{found.get('retries')} retries, endpoint {endpoint}."
    )
    if EVENT_NAME not in triggers:
        return (
            CheckStatus.FAIL,
            detail + f" The app sends {EVENT_NAME}.",
            "An older version of the app is registered: redeploy and sync again.",
        )
    serve_base = ctx.serve_base()
    if serve_base:
        expected = serve_base + SERVE_PATH
        if endpoint and endpoint != expected:
            return (
                CheckStatus.WARN,
                detail + f" This app is at {expected}.",
                "Verify Inngest endpoint is registered correctly: " + sync_remedy,
            )
    return CheckStatus.PASS, detail, ""


@check("inngest.signing", STEP_4, "INNGEST_SIGNING_KEY matches the app's key", _SLOW_APP)
async def inngest_signing(ctx: Context) -> Outcome:
    s = ctx.need_settings()
    if s.inngest_signing_key is None:
        raise Skip("No INNGEST_SIGNING_KEY: dev mode, requests are not signed.")
    base = ctx.need_serve_base()
    key = s.inngest_signing_key.get_secret_value()
    url = base + SERVE_PATH
    response, ms = await _signed_inspection(ctx, base, key)
    body = _json(response) or {}
    match_remedy = (
        "Check Inngest signing key matches in Vercel env vars: INNGEST_SIGNING_KEY must be the "
        "key under Inngest -> Settings -> Signing Keys, the same here, in Vercel (all "
        "environments) and in Inngest; redeploy after changing it."
    )
    if response.status_code == 401 and _sdk_answered(response):
        return (
            CheckStatus.FAIL,
            f"{url} refused a request signed with INNGEST_SIGNING_KEY: the keys differ.",
            match_remedy,
        )
    if response.status_code == 200 and body.get("authentication_succeeded") is True:
        try:
            signing.verify(
                response.headers.get(signing.HEADER),
                response.content,
                key,
                fallback=secret(s.inngest_signing_key_fallback),
                max_age=None,
                canonicalize=False,
            )
        except signing.SignatureError:
            return (
                CheckStatus.WARN,
                f"{url} accepted the signed request, but its answer's signature does not "
                "match INNGEST_SIGNING_KEY.",
                match_remedy,
            )
        return (
            CheckStatus.PASS,
            f"Signed request accepted in {ms:.0f} ms (authentication_succeeded), answer "
            f"signature verified; {body.get('function_count')} function(s), "
            f"mode {body.get('mode')}.",
            "",
        )
    if response.status_code == 200 and body.get("mode") == "dev":
        return (
            CheckStatus.FAIL,
            f"{url} ignores signatures: it runs in dev mode, without a signing key.",
            _SET_APP_SIGNING_KEY,
        )
    if not _sdk_answered(response):
        return _not_sdk(url, response)
    return (
        CheckStatus.FAIL,
        f"{url} answered the signed request with HTTP {response.status_code}.",
        match_remedy,
    )


# --- OpenAI and the app ---------------------------------------------------------------------


@check(
    "openai.model",
    STEP_5,
    "OpenAI: the key is valid and the model available",
    "The model API did not answer in time: check OPENAI_BASE_URL and the network.",
)
async def openai_model(ctx: Context) -> Outcome:
    import openai

    s = ctx.need_settings()
    base = s.openai_base_url or OPENAI_DEFAULT_BASE
    if s.openai_api_key is None:
        return (
            CheckStatus.FAIL,
            "OPENAI_API_KEY is not set.",
            "Check OPENAI_API_KEY: set it in .env.local and Vercel.",
        )
    started = time.perf_counter()
    try:
        async with openai.AsyncOpenAI(
            api_key=s.openai_api_key.get_secret_value(),
            base_url=base,
            max_retries=0,
            timeout=ctx.timeout,
        ) as client:
            model = await client.models.retrieve(s.openai_model)
    except openai.AuthenticationError:
        return (
            CheckStatus.FAIL,
            f"{base} refused OPENAI_API_KEY (HTTP 401).",
            "Check OPENAI_API_KEY: the key is invalid or revoked. Check OpenAI API key is "
            "valid (https://platform.openai.com/api-keys) and set it in .env.local and Vercel.",
        )
    except openai.PermissionDeniedError:
        return (
            CheckStatus.FAIL,
            f"{base} denied this key access (HTTP 403).",
            "Check OPENAI_API_KEY's project and permissions (models: read).",
        )
    except openai.NotFoundError:
        return (
            CheckStatus.FAIL,
            f"Model {s.openai_model} is not available to this key at {base} (HTTP 404).",
            "Model not available to this key: set TRIPKIT_OPENAI_MODEL to a model the key can "
            "use (e.g. gpt-4o-mini), or enable the model for the key's project.",
        )
    except openai.RateLimitError:
        return (
            CheckStatus.WARN,
            f"{base} answered HTTP 429 (rate limit or quota).",
            "Check the OpenAI account's quota and billing.",
        )
    except openai.APITimeoutError:
        return (
            CheckStatus.FAIL,
            f"{base} did not answer within {ctx.timeout:g} s.",
            "Check the network to the model API (OPENAI_BASE_URL).",
        )
    except openai.APIConnectionError:
        return (
            CheckStatus.FAIL,
            f"Cannot reach the model API at {base}.",
            "Check OPENAI_BASE_URL and the network; locally, is `tripkit dev` running?",
        )
    except openai.APIStatusError as exc:
        return (
            CheckStatus.FAIL,
            f"{base} answered HTTP {exc.status_code}.",
            "The model API is failing; try again later.",
        )
    return (
        CheckStatus.PASS,
        f"Key accepted; model {model.id} available at {base} ({_ms(started):.0f} ms).",
        "",
    )


@check("app.health", STEP_5, "The app's /healthz reports ok", _SLOW_APP)
async def app_health(ctx: Context) -> Outcome:
    url = ctx.need_api_url() + "/healthz"
    response, ms = await _get(ctx, url)
    body = _json(response)
    if body is None or "status" not in body:
        return (
            CheckStatus.FAIL,
            f"{url} answered HTTP {response.status_code}, not tripkit's health report.",
            "Is the app URL right, and the app deployed? Check the Vercel deployment logs.",
        )
    parts = []
    problems = []
    for name in ("redis", "inngest"):
        part = body.get(name)
        if not isinstance(part, dict):
            continue
        if part.get("ok") is False:
            problems.append(f"{name}: {part.get('error') or 'not ok'}")
        elif name == "redis":
            parts.append(f"redis ok ({part.get('transport')}, {part.get('latencyMs')} ms)")
        else:
            parts.append("inngest ok" if part.get("ok") else "inngest not probed (cloud)")
    if response.status_code == 200 and body.get("status") == "ok":
        return CheckStatus.PASS, f"ok in {ms:.0f} ms: {'; '.join(parts)}.", ""
    return (
        CheckStatus.FAIL,
        f"{url} reports {body.get('status')} (HTTP {response.status_code}): "
        + "; ".join(problems or parts),
        "The app cannot reach its services: check the Vercel deployment logs for Redis "
        "connection errors and the app's environment variables.",
    )
