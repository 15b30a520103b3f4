"""Every verifiable step of the setup guide, as a check that measures and says what to do.

The guide's troubleshooting section asks a human to "check the credentials", "verify the
endpoint is registered", "check the signing key matches". Each check here does one of
those things against the real services, with the real clients (tripkit's Redis
transports, the ``inngest`` SDK, the ``openai`` client), and reports what it measured
(latency, counts, bytes, modes) and, when it is not green, a remedy in the guide's words.

Rules every check follows:

- a failed service is a ``FAIL`` result, never an exception, and every check is bounded
  by a timeout;
- nothing is started: the Redis round trip uses a throw-away key with a 60 s TTL, and the
  event sent to Inngest (``tripkit/check.ping``) triggers no function;
- no secret is shown: at most its public prefix (``signkey-prod-``, ``sk-``) and its
  length, and every detail and remedy is scrubbed of the configured secret values.

``run_checks(settings)`` checks a loaded :class:`~tripkit.config.Settings`.
``check_environment(env_dir)`` is what ``tripkit check`` runs: it reads the raw
variables too, so a value that :func:`~tripkit.config.load_settings` rejects (quotes, a
stray space) is reported by name instead of stopping everything.

The checks themselves are in :mod:`.variables` (the configuration) and :mod:`.services`
(Redis, Inngest, the model API, the app); :data:`CHECKS` lists them in the guide's order.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from tripkit.checks import services, variables  # noqa: F401 - importing registers the checks
from tripkit.checks.core import (
    CONFIGURATION,
    OPENAI_DEFAULT_BASE,
    PLAIN_VARIABLES,
    REGISTRY,
    SECRET_VARIABLES,
    STEP_1,
    STEP_2,
    STEP_4,
    STEP_5,
    STEPS,
    Check,
    CheckResult,
    CheckStatus,
    Context,
    Diagnosis,
    Outcome,
    Stop,
    raw_values,
    scrub,
    secret_values,
    shape,
    values_of,
)
from tripkit.checks.services import (
    DASHBOARD_REMEDY,
    FREE_TIER_DATA_BYTES,
    FREE_TIER_SOURCE,
    MEMORY_WARN_FRACTION,
    PING_EVENT,
    free_tier_data_size,
)
from tripkit.config import ENV_FILES, Settings, load_settings
from tripkit.constants import SERVE_PATH
from tripkit.errors import ConfigError, TripkitError

__all__ = [
    "ADVICE",
    "CHECKS",
    "CONFIGURATION",
    "DASHBOARD_REMEDY",
    "FREE_TIER_DATA_BYTES",
    "FREE_TIER_SOURCE",
    "GUIDE_STEPS",
    "MEMORY_WARN_FRACTION",
    "OPENAI_DEFAULT_BASE",
    "PING_EVENT",
    "PLAIN_VARIABLES",
    "SECRET_VARIABLES",
    "SERVE_PATH",
    "STEPS",
    "STEP_1",
    "STEP_2",
    "STEP_4",
    "STEP_5",
    "TROUBLESHOOTING",
    "CheckResult",
    "CheckStatus",
    "Diagnosis",
    "Outcome",
    "check_environment",
    "counts",
    "diagnose",
    "format_text",
    "free_tier_data_size",
    "read_environment",
    "run_checks",
    "select",
    "shape",
    "summary_table",
]

# --- the guide, as data -------------------------------------------------------------------

#: Every check, in the guide's order: by step, then as defined in .variables and .services.
CHECKS: dict[str, Check] = dict(sorted(REGISTRY.items(), key=lambda kv: STEPS.index(kv[1].step)))

#: The guide's steps (:data:`STEPS`) in order, with the checks that verify each.
GUIDE_STEPS: list[tuple[str, list[str]]] = [
    (step, [i for i, c in CHECKS.items() if c.step == step]) for step in STEPS
]


def _matches(check_id: str, wanted: str) -> bool:
    return check_id == wanted or check_id.startswith(wanted.rstrip(".") + ".")


def _named(*wanted: str) -> list[str]:
    """The check ids that ``wanted`` names (ids or prefixes), in the order named."""
    unknown = [w for w in wanted if not any(_matches(i, w) for i in CHECKS)]
    if unknown:
        raise ValueError(f"unknown check ids or prefixes: {', '.join(unknown)}")
    return list(dict.fromkeys(i for w in wanted for i in CHECKS if _matches(i, w)))


#: The guide's troubleshooting entries -> the checks that diagnose them.
TROUBLESHOOTING: dict[str, list[str]] = {
    "Session not found": _named(
        "config.UPSTASH_REDIS_REST_URL",
        "config.UPSTASH_REDIS_REST_TOKEN",
        "upstash",
        "redis",
        "app",
    ),
    "Function not executing": _named(
        "config.INNGEST_EVENT_KEY",
        "config.INNGEST_SIGNING_KEY",
        "config.INNGEST_SIGNING_KEY_FALLBACK",
        "inngest",
    ),
    "Worker times out": _named("config.OPENAI_API_KEY", "openai"),
    "Polling never completes": _named(
        "inngest.event_api", "inngest.serve", "inngest.function", "upstash.roundtrip", "app"
    ),
}

#: The guide's own advice for each entry (its "Troubleshooting" section), with one note
#: where the guide is out of date (plan-limits.md: at most 2 h per step).
ADVICE: dict[str, str] = {
    "Session not found": (
        "Check Upstash Redis credentials are correct in Vercel. Verify Redis instance is "
        "active (not paused). Check Vercel deployment logs for Redis connection errors."
    ),
    "Function not executing": (
        "Verify Inngest endpoint is registered correctly. Check Inngest signing key matches "
        "in Vercel env vars. Look at Inngest dashboard for error messages. Check Vercel "
        "function logs for /api/inngest route."
    ),
    "Worker times out": (
        "Check OpenAI API key is valid. Look for errors in Inngest function execution logs. "
        "(The guide says Inngest has no timeout; today one step may run at most 2 h.)"
    ),
    "Polling never completes": (
        "Check if worker function is actually running (Inngest dashboard). Verify Redis "
        "session is being updated (Upstash data browser). Look for errors in browser console."
    ),
}

# --- running ------------------------------------------------------------------------------


async def run_checks(
    settings: Settings,
    *,
    api_url: str | None = None,
    worker_url: str | None = None,
    only: Iterable[str] | None = None,
    timeout: float = 5.0,
) -> list[CheckResult]:
    """Run the checks (all, or the ids/prefixes in ``only``) in :data:`GUIDE_STEPS` order.

    ``api_url`` is the app's base URL (default: ``TRIPKIT_API_URL``); without it the
    checks of the app's endpoints are skipped. ``worker_url`` (default:
    ``TRIPKIT_WORKER_URL``) is where ``/api/inngest`` is served when the worker runs
    apart from the API; an ``api_url`` given without one means that app serves it too.
    The checks run one after the other, each bounded by ``timeout`` seconds; a failed
    service gives a ``FAIL`` result.
    """
    ctx = Context(
        values=values_of(settings),
        settings=settings,
        settings_error=None,
        api_url=api_url or os.environ.get("TRIPKIT_API_URL") or None,
        worker_url=worker_url or (None if api_url else os.environ.get("TRIPKIT_WORKER_URL")),
        timeout=timeout,
    )
    return await _run(ctx, only)


async def check_environment(
    env_dir: str | Path | None = None,
    *,
    api_url: str | None = None,
    worker_url: str | None = None,
    only: Iterable[str] | None = None,
    timeout: float = 5.0,
) -> list[CheckResult]:
    """The checks as ``tripkit check`` runs them: from the environment, ``.env.local`` and
    ``.env``, reporting a value the settings reject instead of raising."""
    raw = read_environment(env_dir)
    cleaned: list[str] = []
    try:
        settings: Settings | None = load_settings(env_dir)
        error = None
    except ConfigError as exc:
        error = exc
        settings, cleaned = _load_cleaned(env_dir, raw)
    ctx = Context(
        values=values_of(settings) if error is None and settings else raw_values(raw),
        settings=settings,
        settings_error=error,
        cleaned=cleaned,
        api_url=api_url or raw.get("TRIPKIT_API_URL") or None,
        worker_url=worker_url or (None if api_url else raw.get("TRIPKIT_WORKER_URL")),
        timeout=timeout,
    )
    return await _run(ctx, only)


def _load_cleaned(
    env_dir: str | Path | None, raw: Mapping[str, str]
) -> tuple[Settings | None, list[str]]:
    """The settings with stray quotes and spaces removed from the secrets, if that is all
    that stopped them loading: the service checks can then still say whether the value
    itself is right (the variable checks report the quotes)."""
    fields = {info.alias: name for name, info in Settings.model_fields.items() if info.alias}
    overrides: dict[str, str] = {}
    for variable in SECRET_VARIABLES:
        value = raw.get(variable)
        if value and variable in fields:
            fixed, problem = variables.hygiene(variable, value)
            if problem is not None and fixed:
                overrides[fields[variable]] = fixed
    if not overrides:
        return None, []
    try:
        settings = load_settings(env_dir, **overrides)
    except ConfigError:
        return None, []
    names = [alias for alias, name in fields.items() if name in overrides]
    return settings, sorted(names)


def read_environment(env_dir: str | Path | None = None) -> dict[str, str]:
    """The raw variables as the settings see them: environment, then .env.local, then .env."""
    from dotenv import dotenv_values

    base = Path(env_dir) if env_dir is not None else Path.cwd()
    out: dict[str, str] = {}
    for name in reversed(ENV_FILES):  # lowest priority first, later ones overwrite
        path = base / name
        if path.is_file():
            for key, value in dotenv_values(path, encoding="utf-8").items():
                if value is not None:
                    out[key] = value
    out.update(os.environ)
    return out


def select(only: Iterable[str] | None) -> list[str]:
    """The check ids ``only`` names (ids or prefixes such as ``upstash``), in guide order."""
    if only is None:
        return list(CHECKS)
    named = set(_named(*(w.strip() for w in only if w.strip())))
    return [i for i in CHECKS if i in named]


async def _run(ctx: Context, only: Iterable[str] | None) -> list[CheckResult]:
    secrets = secret_values(ctx.values)
    # One after the other: run concurrently, each check's latency would include the
    # others' client set-up (TLS contexts, imports) and no longer measure the service.
    return [await _one(CHECKS[i], ctx, secrets) for i in select(only)]


async def _one(check: Check, ctx: Context, secrets: list[str]) -> CheckResult:
    started = time.perf_counter()
    try:
        status, detail, remedy = await asyncio.wait_for(check.run(ctx), ctx.timeout)
    except Stop as stop:
        status, detail, remedy = stop.outcome
    except TimeoutError:
        status, detail = CheckStatus.FAIL, f"No answer within {ctx.timeout:g} s."
        remedy = check.timeout_remedy
    except TripkitError as exc:
        status, detail, remedy = CheckStatus.FAIL, exc.message, exc.remedy
    except Exception as exc:  # a check must never raise: report it instead
        status, detail = CheckStatus.FAIL, f"Unexpected error: {type(exc).__name__}: {exc}"
        remedy = "This may be a bug in tripkit's checks; please report it."
    if status is CheckStatus.PASS:
        remedy = ""
    return CheckResult(
        id=check.id,
        step=check.step,
        title=check.title,
        status=status,
        detail=scrub(detail, secrets),
        remedy=scrub(remedy, secrets),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )


# --- reading the results --------------------------------------------------------------------


def diagnose(results: list[CheckResult]) -> list[Diagnosis]:
    """Which of the guide's troubleshooting entries the failures point at."""
    failed = {r.id for r in results if r.status is CheckStatus.FAIL}
    out = []
    for entry, ids in TROUBLESHOOTING.items():
        failing = [i for i in ids if i in failed]
        out.append(Diagnosis(entry, bool(failing), failing, ADVICE[entry]))
    return out


def counts(results: list[CheckResult]) -> dict[str, int]:
    return {status.value: sum(r.status is status for r in results) for status in CheckStatus}


def summary_table(results: list[CheckResult]) -> list[dict[str, str]]:
    """One row per check, for a DataFrame or an HTML table."""
    return [
        {
            "step": r.step,
            "check": r.id,
            "status": r.status.value,
            "detail": r.detail,
            "remedy": r.remedy,
        }
        for r in results
    ]


def format_text(results: list[CheckResult], diagnoses: list[Diagnosis]) -> str:
    """A plain-text report: the checks grouped by guide step, then what the failures mean."""
    lines: list[str] = []
    step = None
    width = max((len(r.id) for r in results), default=0)
    for r in results:
        if r.step != step:
            step = r.step
            if lines:
                lines.append("")
            lines.append(step)
        lines.append(f"  {r.status.value.upper():<4}  {r.id:<{width}}  {r.detail}")
        if r.remedy and r.status is not CheckStatus.PASS:
            lines.append(f"        {'':<{width}}  -> {r.remedy}")
    applying = [d for d in diagnoses if d.applies]
    if applying:
        lines += ["", "Troubleshooting (the setup guide's entries that apply)"]
        for d in applying:
            lines.append(f'  "{d.entry}": failing {", ".join(d.failing)}')
            lines.append(f"        {d.advice}")
    c = counts(results)
    lines += [
        "",
        f"{c['pass']} passed, {c['warn']} warnings, {c['fail']} failed, {c['skip']} skipped.",
    ]
    return "\n".join(lines).lstrip("\n")
