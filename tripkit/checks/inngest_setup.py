"""Steps 2 and 4: Inngest takes the event key, the app serves its function at
``/api/inngest`` in the expected mode, Inngest has registered it, and the signing keys
match. Measured with the ``inngest`` SDK and signed requests like Inngest's own.

Nothing is started: the event sent (:data:`PING_EVENT`) triggers no function.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tripkit import signing
from tripkit.checks.core import STEP_2, STEP_4, CheckStatus, Context, Outcome, Skip, check, secret
from tripkit.checks.probes import SLOW_APP, elapsed_ms, http_get, json_object
from tripkit.constants import (
    APP_ID,
    EVENT_NAME,
    FUNCTION_ID,
    FUNCTION_NAME,
    FUNCTION_SLUG,
    SERVE_PATH,
)

#: An event no function listens to: proves the event key without starting a run.
PING_EVENT = "tripkit/check.ping"

DASHBOARD_REMEDY = (
    f"In the Inngest dashboard: Apps -> {APP_ID} should show 'Endpoint connected', "
    f"'Function \"{FUNCTION_NAME}\" discovered' and 'Status: Active'. If not: Manage -> "
    f"Endpoints -> Add Endpoint https://your-vercel-url.vercel.app{SERVE_PATH}, then Sync."
)


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
    ms = elapsed_ms(started)
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


def _sdk_answered(response: httpx.Response) -> bool:
    return "x-inngest-sdk-handled" in response.headers or "x-inngest-sdk" in response.headers


def _not_sdk(url: str, response: httpx.Response) -> Outcome:
    return (
        CheckStatus.FAIL,
        f"{url} answered HTTP {response.status_code}, not from the Inngest SDK.",
        f"Check Vercel function logs for {SERVE_PATH} route. If Vercel Deployment Protection "
        "is on, Inngest cannot reach the endpoint either: allow it (Protection Bypass for "
        "Automation).",
    )


_SET_APP_SIGNING_KEY = (
    "Set INNGEST_SIGNING_KEY in the app's environment (Vercel Environment Variables, all "
    "environments) and redeploy."
)


async def _signed_inspection(ctx: Context, base: str, key: str) -> tuple[httpx.Response, float]:
    return await http_get(ctx, base + SERVE_PATH, {signing.HEADER: signing.sign(b"", key)})


@check(
    "inngest.serve",
    STEP_4,
    f"The app's {SERVE_PATH} answers in the expected mode with its function",
    SLOW_APP,
)
async def inngest_serve(ctx: Context) -> Outcome:
    s = ctx.need_settings()
    base = ctx.need_serve_base()
    url = base + SERVE_PATH
    response, ms = await http_get(ctx, url)
    if not _sdk_answered(response):
        return _not_sdk(url, response)
    key = secret(s.inngest_signing_key)
    body = json_object(response) or {}
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
        inspected = json_object(signed) or {}
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
        f"Check Vercel function logs for {SERVE_PATH} route.",
    )


def _count_outcome(url: str, mode: str, body: dict[str, Any], ms: float) -> Outcome:
    count = body.get("function_count")
    detail = f"{url} answered in {ms:.0f} ms: {mode} mode, {count} function(s)"
    if not isinstance(count, int) or count < 1:
        return (
            CheckStatus.FAIL,
            detail + ".",
            f"The app serves no Inngest function: check that {SERVE_PATH} serves "
            f"{FUNCTION_ID}, then redeploy.",
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
    f"{FUNCTION_ID} is registered with Inngest",
    "The Inngest server did not answer in time.",
)
async def inngest_function(ctx: Context) -> Outcome:
    s = ctx.need_settings()
    if s.inngest_base_url is None:
        raise Skip("Inngest Cloud: the function list is in the dashboard.", DASHBOARD_REMEDY)
    url = f"{s.inngest_base_url}/v1/functions"
    response, _ = await http_get(
        ctx,
        url,
        unreachable="Is the Inngest server at INNGEST_BASE_URL running? Locally: is "
        "`tripkit dev` running, and is INNGEST_BASE_URL the URL it printed?",
    )
    if response.status_code == 404:
        raise Skip(
            f"The Inngest server at {s.inngest_base_url} does not list functions.",
            f"Open its UI ({s.inngest_base_url}) and look for '{FUNCTION_NAME}'.",
        )
    body = json_object(response)
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


@check("inngest.signing", STEP_4, "INNGEST_SIGNING_KEY matches the app's key", SLOW_APP)
async def inngest_signing(ctx: Context) -> Outcome:
    s = ctx.need_settings()
    if s.inngest_signing_key is None:
        raise Skip("No INNGEST_SIGNING_KEY: dev mode, requests are not signed.")
    base = ctx.need_serve_base()
    key = s.inngest_signing_key.get_secret_value()
    url = base + SERVE_PATH
    response, ms = await _signed_inspection(ctx, base, key)
    body = json_object(response) or {}
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
