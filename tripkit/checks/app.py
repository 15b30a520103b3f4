"""Step 5: the deployed app answers, and its own health report says it reaches its
services."""

from __future__ import annotations

from tripkit.checks.core import STEP_5, CheckStatus, Context, Outcome, check
from tripkit.checks.probes import SLOW_APP, http_get, json_object


@check("app.health", STEP_5, "The app's /healthz reports ok", SLOW_APP)
async def app_health(ctx: Context) -> Outcome:
    url = ctx.need_api_url() + "/healthz"
    response, ms = await http_get(ctx, url)
    body = json_object(response)
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
