"""Running the checks and reading their results.

Every check runs bounded by a timeout; whatever it raises becomes a ``FAIL`` result, and
every detail and remedy is scrubbed of the configured secrets before it is returned.
:func:`check_environment` reads the raw variables too, so a value that
:func:`~tripkit.config.load_settings` rejects is reported by name instead of stopping
everything.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from tripkit.checks import variables
from tripkit.checks.core import (
    ENVIRONMENT,
    SECRET_VARIABLES,
    Check,
    CheckResult,
    CheckStatus,
    Context,
    Diagnosis,
    Stop,
    raw_values,
    scrub,
    secret_values,
    values_of,
)
from tripkit.checks.guide import ADVICE, CHECKS, TROUBLESHOOTING, named
from tripkit.config import ENV_FILES, Settings, load_settings
from tripkit.errors import ConfigError, TripkitError
from tripkit.paths import project_root

# --- running ------------------------------------------------------------------------------


async def run_checks(
    settings: Settings,
    *,
    api_url: str | None = None,
    worker_url: str | None = None,
    only: Iterable[str] | None = None,
    timeout: float = 5.0,
    local_stack: bool = False,
) -> list[CheckResult]:
    """Run the checks (all, or the ids/prefixes in ``only``) in the guide's order.

    ``api_url`` is the app's base URL (default: ``TRIPKIT_API_URL``); without it the
    checks of the app's endpoints are skipped. ``worker_url`` (default:
    ``TRIPKIT_WORKER_URL``) is where ``/api/inngest`` is served when the worker runs
    apart from the API; an ``api_url`` given without one means that app serves it too.
    The checks run one after the other, each bounded by ``timeout`` seconds; a failed
    service gives a ``FAIL`` result. ``local_stack``: the settings are the offline
    stack's, so endpoints on this machine are expected; otherwise they fail.
    """
    values = values_of(settings)
    ctx = Context(
        values=values,
        settings=settings,
        settings_error=None,
        api_url=api_url or os.environ.get("TRIPKIT_API_URL") or None,
        worker_url=worker_url or (None if api_url else os.environ.get("TRIPKIT_WORKER_URL")),
        timeout=timeout,
        local_stack=local_stack,
        sources=_from_environment(values),
    )
    return await _run(ctx, only)


async def check_environment(
    env_dir: str | Path | None = None,
    *,
    api_url: str | None = None,
    worker_url: str | None = None,
    only: Iterable[str] | None = None,
    timeout: float = 5.0,
    local_stack: bool = False,
) -> list[CheckResult]:
    """The checks as ``tripkit check`` runs them: from the environment, ``.env.local`` and
    ``.env`` (in ``env_dir``, default the project root), reporting a value the settings
    reject instead of raising, and saying where each variable's value came from.
    ``local_stack`` as for :func:`run_checks`."""
    raw, sources = read_sources(env_dir)
    cleaned: list[str] = []
    try:
        settings: Settings | None = load_settings(env_dir)
        error = None
    except ConfigError as exc:
        error = exc
        settings, cleaned = _load_cleaned(env_dir, raw)
    base = _env_base(env_dir)
    ctx = Context(
        values=values_of(settings) if error is None and settings else raw_values(raw),
        settings=settings,
        settings_error=error,
        cleaned=cleaned,
        api_url=api_url or raw.get("TRIPKIT_API_URL") or None,
        worker_url=worker_url or (None if api_url else raw.get("TRIPKIT_WORKER_URL")),
        timeout=timeout,
        local_stack=local_stack,
        sources=sources,
        searched="the environment, " + " and ".join(str(base / name) for name in ENV_FILES),
    )
    return await _run(ctx, only)


def _from_environment(values: Mapping[str, str | None]) -> dict[str, str]:
    """The variables whose loaded value is the environment's (settings given ready-made
    do not say where the rest came from)."""

    def same(a: str, b: str) -> bool:
        return a.strip().rstrip("/") == b.strip().rstrip("/")

    return {
        name: ENVIRONMENT
        for name, value in values.items()
        if value and os.environ.get(name) and same(os.environ[name], value)
    }


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


def _env_base(env_dir: str | Path | None) -> Path:
    """Where the dotenv files are: ``env_dir``, else the project root, as
    :func:`~tripkit.config.load_settings` looks (a kernel's working directory is
    ``notebooks/``, which holds none)."""
    return (Path(env_dir) if env_dir is not None else project_root()).absolute()


def read_environment(env_dir: str | Path | None = None) -> dict[str, str]:
    """The raw variables as the settings see them: environment, then .env.local, then .env
    (in ``env_dir``, default the project root)."""
    return read_sources(env_dir)[0]


def read_sources(env_dir: str | Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """:func:`read_environment`, and where each value came from: :data:`ENVIRONMENT` or
    the absolute path of the dotenv file (a path is worth showing; a value may not be)."""
    from dotenv import dotenv_values

    base = _env_base(env_dir)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name in reversed(ENV_FILES):  # lowest priority first, later ones overwrite
        path = base / name
        if path.is_file():
            for key, value in dotenv_values(path, encoding="utf-8").items():
                if value is not None:
                    values[key] = value
                    sources[key] = str(path)
    values.update(os.environ)
    sources.update(dict.fromkeys(os.environ, ENVIRONMENT))
    return values, sources


def select(only: Iterable[str] | None) -> list[str]:
    """The check ids ``only`` names (ids or prefixes such as ``upstash``), in guide order."""
    if only is None:
        return list(CHECKS)
    wanted = set(named(*(w.strip() for w in only if w.strip())))
    return [i for i in CHECKS if i in wanted]


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
