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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from tripkit import signing
from tripkit.config import ENV_FILES, Settings, load_settings, mask_url
from tripkit.errors import CommandError, ConfigError, TripkitError
from tripkit.transport import Transport

# --- results ------------------------------------------------------------------------------


class CheckStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome; ``detail`` is what was measured, never a secret."""

    id: str
    step: str
    title: str
    status: CheckStatus
    detail: str
    remedy: str
    elapsed_ms: float

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out


@dataclass(frozen=True)
class Diagnosis:
    """Whether one of the guide's troubleshooting entries applies, and why."""

    entry: str
    applies: bool
    failing: list[str]
    advice: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the guide, as data -------------------------------------------------------------------

CONFIGURATION = "Configuration"
STEP_1 = "Step 1: Upstash Redis"
STEP_2 = "Step 2: Inngest"
STEP_4 = "Step 4: Register the Inngest endpoint"
STEP_5 = "Step 5: Test the system"

#: The guide's steps in order, with the checks that verify each. Step 3 (deploy) and
#: step 6 (production run) have nothing to verify beyond what steps 4 and 5 check.
GUIDE_STEPS: list[tuple[str, list[str]]] = [
    (
        CONFIGURATION,
        [
            "config.settings",
            "config.UPSTASH_REDIS_REST_URL",
            "config.UPSTASH_REDIS_REST_TOKEN",
            "config.INNGEST_EVENT_KEY",
            "config.INNGEST_SIGNING_KEY",
            "config.INNGEST_SIGNING_KEY_FALLBACK",
            "config.OPENAI_API_KEY",
        ],
    ),
    (STEP_1, ["upstash.ping", "upstash.roundtrip", "upstash.memory", "redis.ping"]),
    (STEP_2, ["inngest.event_api"]),
    (STEP_4, ["inngest.serve", "inngest.function", "inngest.signing"]),
    (STEP_5, ["openai.model", "app.health"]),
]

#: The guide's troubleshooting entries -> the checks that diagnose them.
TROUBLESHOOTING: dict[str, list[str]] = {
    "Session not found": [
        "config.UPSTASH_REDIS_REST_URL",
        "config.UPSTASH_REDIS_REST_TOKEN",
        "upstash.ping",
        "upstash.roundtrip",
        "upstash.memory",
        "redis.ping",
        "app.health",
    ],
    "Function not executing": [
        "config.INNGEST_EVENT_KEY",
        "config.INNGEST_SIGNING_KEY",
        "config.INNGEST_SIGNING_KEY_FALLBACK",
        "inngest.event_api",
        "inngest.serve",
        "inngest.function",
        "inngest.signing",
    ],
    "Worker times out": ["config.OPENAI_API_KEY", "openai.model"],
    "Polling never completes": [
        "inngest.event_api",
        "inngest.serve",
        "inngest.function",
        "upstash.roundtrip",
        "app.health",
    ],
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

#: Upstash Free's data size, when tripkit/data/plan_limits.json (the report's plan data,
#: with sources and dates) cannot be read: the guide's and Upstash's 256 MB.
FREE_TIER_DATA_BYTES = 256 * 1024 * 1024
FREE_TIER_SOURCE = "Upstash Redis billing docs, 2026-06-18"
MEMORY_WARN_FRACTION = 0.8

#: An event no function listens to: proves the event key without starting a run.
PING_EVENT = "tripkit/check.ping"
SERVE_PATH = "/api/inngest"  # tripkit.api.SERVE_PATH; not imported, the API pulls in FastAPI
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"

DASHBOARD_REMEDY = (
    "In the Inngest dashboard: Apps -> special-trips should show 'Endpoint connected', "
    "'Function \"Generate Trip Bundles\" discovered' and 'Status: Active'. If not: Manage -> "
    "Endpoints -> Add Endpoint https://your-vercel-url.vercel.app/api/inngest, then Sync."
)

# --- running ------------------------------------------------------------------------------

Outcome = tuple[CheckStatus, str, str]  # status, detail, remedy


@dataclass
class _Context:
    """What the checks read: the raw values, the settings if they loaded, the app URL."""

    values: Mapping[str, str | None]
    settings: Settings | None
    settings_error: ConfigError | None
    api_url: str | None
    timeout: float
    cleaned: list[str] = field(default_factory=list)  # variables read without quotes/spaces

    @property
    def local(self) -> bool:
        """Talking to a local Inngest server (INNGEST_BASE_URL), not Inngest Cloud."""
        return bool(self.values.get("INNGEST_BASE_URL"))

    def need_settings(self) -> Settings:
        if self.settings is None:
            raise _Skip("The settings did not load.", "Fix the configuration first.")
        return self.settings

    def need_api_url(self) -> str:
        if not self.api_url:
            raise _Skip(
                "No app URL given.",
                "Pass --api-url https://your-vercel-url.vercel.app (or set TRIPKIT_API_URL); "
                "locally, `tripkit dev` prints it.",
            )
        return _app_base(self.api_url)


class _Skip(Exception):
    def __init__(self, detail: str, remedy: str = "") -> None:
        super().__init__(detail)
        self.detail, self.remedy = detail, remedy


@dataclass(frozen=True)
class _Check:
    id: str
    title: str
    run: Callable[[_Context], Awaitable[Outcome]]
    timeout_remedy: str = ""


async def run_checks(
    settings: Settings,
    *,
    api_url: str | None = None,
    only: Iterable[str] | None = None,
    timeout: float = 5.0,
) -> list[CheckResult]:
    """Run the checks (all, or the ids/prefixes in ``only``) in :data:`GUIDE_STEPS` order.

    ``api_url`` is the app's base URL (default: ``TRIPKIT_API_URL``); without it the
    checks of the app's endpoints are skipped. The checks run one after the other, each
    bounded by ``timeout`` seconds; a failed service gives a ``FAIL`` result.
    """
    ctx = _Context(
        values=_values_of(settings),
        settings=settings,
        settings_error=None,
        api_url=api_url or os.environ.get("TRIPKIT_API_URL") or None,
        timeout=timeout,
    )
    return await _run(ctx, only)


async def check_environment(
    env_dir: str | Path | None = None,
    *,
    api_url: str | None = None,
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
    values = _values_of(settings) if error is None and settings else _raw_values(raw)
    ctx = _Context(
        values=values,
        settings=settings,
        settings_error=error,
        cleaned=cleaned,
        api_url=api_url or raw.get("TRIPKIT_API_URL") or None,
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
            fixed, problem = _hygiene(variable, value)
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
    ids = [check_id for _, step_ids in GUIDE_STEPS for check_id in step_ids]
    if only is None:
        return ids
    wanted = [w.strip() for w in only if w.strip()]
    unknown = [w for w in wanted if not any(_matches(i, w) for i in ids)]
    if unknown:
        raise ValueError(f"unknown check ids or prefixes: {', '.join(unknown)}")
    return [i for i in ids if any(_matches(i, w) for w in wanted)]


def _matches(check_id: str, wanted: str) -> bool:
    return check_id == wanted or check_id.startswith(wanted.rstrip(".") + ".")


async def _run(ctx: _Context, only: Iterable[str] | None) -> list[CheckResult]:
    ids = select(only)
    step_of = {i: step for step, step_ids in GUIDE_STEPS for i in step_ids}
    secret_values = _secret_values(ctx.values)
    # One after the other: run concurrently, each check's latency would include the
    # others' client set-up (TLS contexts, imports) and no longer measure the service.
    return [await _one(CHECKS[i], step_of[i], ctx, secret_values) for i in ids]


async def _one(check: _Check, step: str, ctx: _Context, secret_values: list[str]) -> CheckResult:
    started = time.perf_counter()
    try:
        status, detail, remedy = await asyncio.wait_for(check.run(ctx), ctx.timeout)
    except _Skip as skip:
        status, detail, remedy = CheckStatus.SKIP, skip.detail, skip.remedy
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
        step=step,
        title=check.title,
        status=status,
        detail=_scrub(detail, secret_values),
        remedy=_scrub(remedy, secret_values),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )


# --- secrets: what may be shown -----------------------------------------------------------

SECRET_VARIABLES = (
    "UPSTASH_REDIS_REST_TOKEN",
    "INNGEST_EVENT_KEY",
    "INNGEST_SIGNING_KEY",
    "INNGEST_SIGNING_KEY_FALLBACK",
    "OPENAI_API_KEY",
    "REDIS_URL",
)
PLAIN_VARIABLES = (
    "UPSTASH_REDIS_REST_URL",
    "INNGEST_BASE_URL",
    "OPENAI_BASE_URL",
    "TRIPKIT_REDIS_TRANSPORT",
)
_PUBLIC_PREFIX = re.compile(r"^(signkey-[A-Za-z0-9]+-|sk-(?:proj|svcacct|admin)-|sk-|evt_)")
_SIGNING_KEY = re.compile(r"^signkey-([A-Za-z0-9]+)-(.*)$")
_PLACEHOLDER = re.compile(
    r"your[_-]|_here\b|changeme|placeholder|example|xxxx|\.\.\.|<|>", re.IGNORECASE
)


def _values_of(settings: Settings) -> dict[str, str | None]:
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    return {
        "UPSTASH_REDIS_REST_URL": settings.upstash_redis_rest_url,
        "UPSTASH_REDIS_REST_TOKEN": secret(settings.upstash_redis_rest_token),
        "REDIS_URL": secret(settings.redis_url),
        "INNGEST_EVENT_KEY": secret(settings.inngest_event_key),
        "INNGEST_SIGNING_KEY": secret(settings.inngest_signing_key),
        "INNGEST_SIGNING_KEY_FALLBACK": secret(settings.inngest_signing_key_fallback),
        "INNGEST_BASE_URL": settings.inngest_base_url,
        "OPENAI_API_KEY": secret(settings.openai_api_key),
        "OPENAI_BASE_URL": settings.openai_base_url,
        "TRIPKIT_REDIS_TRANSPORT": settings.redis_transport,
    }


def _raw_values(raw: Mapping[str, str]) -> dict[str, str | None]:
    return {name: (raw.get(name) or None) for name in (*SECRET_VARIABLES, *PLAIN_VARIABLES)}


def _secret_values(values: Mapping[str, str | None]) -> list[str]:
    out: list[str] = []
    for name in SECRET_VARIABLES:
        value = values.get(name)
        if not value:
            continue
        stripped = value.strip().strip("'\"").strip()
        if name == "REDIS_URL":  # only its password is secret; the host is worth showing
            try:
                password = urllib.parse.urlsplit(stripped).password
            except ValueError:
                password = stripped
            out.append(password or "")
            continue
        out += [value, stripped]
        if name.startswith("INNGEST_SIGNING_KEY"):
            out.append(signing.strip_prefix(stripped))
    # Longest first, so a key is replaced whole before a part of it; ignore tiny values.
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


def _scrub(text: str, secret_values: list[str]) -> str:
    for value in secret_values:
        text = text.replace(value, "***")
    return text


def shape(value: str) -> str:
    """How a secret may be shown: its public prefix, if it has one, and its length."""
    match = _PUBLIC_PREFIX.match(value)
    prefix = match.group(1) if match else ""
    return f"{prefix}…, {len(value)} chars" if prefix else f"{len(value)} chars"


def _hygiene(name: str, raw: str) -> tuple[str, Outcome | None]:
    """The value without stray quotes/spaces, and a FAIL if it had any."""
    value = raw.strip()
    problems = []
    if value != raw:
        problems.append("has leading or trailing whitespace (a stray space or newline?)")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        problems.append("is wrapped in quotes")
        value = value[1:-1].strip()
    if any(c.isspace() for c in value):
        problems.append("contains whitespace")
    if not problems:
        return value, None
    remedy = (
        f"Set {name} to the value exactly as copied, without quotes or spaces (in .env.local "
        "and in the Vercel project's Environment Variables)."
    )
    return value, (CheckStatus.FAIL, f"{name} {' and '.join(problems)}.", remedy)


def _placeholder(name: str, value: str) -> Outcome | None:
    if _PLACEHOLDER.search(value):
        return (
            CheckStatus.FAIL,
            f"{name} looks like a placeholder from the guide's examples, not a real value "
            f"({shape(value)}).",
            f"Copy the real {name} from the service's console into .env.local and Vercel.",
        )
    return None


# --- configuration checks -----------------------------------------------------------------


async def _config_settings(ctx: _Context) -> Outcome:
    if ctx.settings_error is not None or ctx.settings is None:
        error = ctx.settings_error
        detail = error.message if error else "The settings did not load."
        if ctx.cleaned and ctx.settings is not None:
            detail += (
                " The service checks ran with the quotes/spaces removed from "
                + ", ".join(ctx.cleaned)
                + "."
            )
        return CheckStatus.FAIL, detail, error.remedy if error else ""
    s = ctx.settings
    try:
        transport = s.redis_transport_name
    except ConfigError as exc:
        return CheckStatus.FAIL, exc.message, exc.remedy
    if transport == "rest" and (s.upstash_redis_rest_url is None or not s.upstash_redis_rest_token):
        return (
            CheckStatus.FAIL,
            "TRIPKIT_REDIS_TRANSPORT is rest but the Upstash REST URL or token is unset.",
            "Set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN, or unset "
            "TRIPKIT_REDIS_TRANSPORT.",
        )
    if transport == "resp" and s.redis_url is None:
        return (
            CheckStatus.FAIL,
            "TRIPKIT_REDIS_TRANSPORT is resp but REDIS_URL is unset.",
            "Set REDIS_URL, or unset TRIPKIT_REDIS_TRANSPORT.",
        )
    redis = "Upstash REST" if transport == "rest" else "REDIS_URL (RESP)"
    mode = "cloud mode (signed)" if s.inngest_signing_key else "dev mode (unsigned)"
    where = s.inngest_base_url or ("Inngest Cloud" if s.inngest_signing_key else "127.0.0.1:8288")
    return (
        CheckStatus.PASS,
        f"Redis via {redis}; Inngest {mode} at {where}; model {s.openai_model}; "
        f"session TTL {s.session_ttl} s.",
        "",
    )


async def _config_rest_url(ctx: _Context) -> Outcome:
    name = "UPSTASH_REDIS_REST_URL"
    raw = ctx.values.get(name)
    if not raw:
        if ctx.values.get("REDIS_URL") and not ctx.values.get("UPSTASH_REDIS_REST_TOKEN"):
            raise _Skip("Unset; REDIS_URL is used instead.")
        return (
            CheckStatus.FAIL,
            f"{name} is not set.",
            "Copy UPSTASH_REDIS_REST_URL from the Upstash console (database -> 'REST API') "
            "into .env.local and the Vercel project's Environment Variables.",
        )
    value, bad = _hygiene(name, raw)
    if bad:
        return bad
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            CheckStatus.FAIL,
            f"{name} is not an https:// URL ({shape(value)}).",
            "It should look like https://your-db.upstash.io. Are the URL and the token swapped?",
        )
    if bad := _placeholder(name, parts.hostname):
        return bad
    host = parts.hostname
    shown = mask_url(value)
    if parts.scheme == "https":
        note = "" if host.endswith(".upstash.io") else " (not an upstash.io host: a REST gateway?)"
        return CheckStatus.PASS, f"{shown}{note}", ""
    if _loopback(host):
        return CheckStatus.PASS, f"{shown} (plain http on loopback: a local gateway)", ""
    if host.endswith(".upstash.io"):
        return (
            CheckStatus.FAIL,
            f"{shown} uses plain http; Upstash serves REST over https only.",
            f"Use https://{host} as in the Upstash console.",
        )
    return (
        CheckStatus.WARN,
        f"{shown} uses plain http to a non-local host: the token travels unencrypted.",
        "Use https:// (Upstash's REST URLs are https).",
    )


async def _config_rest_token(ctx: _Context) -> Outcome:
    name = "UPSTASH_REDIS_REST_TOKEN"
    raw = ctx.values.get(name)
    if not raw:
        if ctx.values.get("REDIS_URL") and not ctx.values.get("UPSTASH_REDIS_REST_URL"):
            raise _Skip("Unset; REDIS_URL is used instead.")
        return (
            CheckStatus.FAIL,
            f"{name} is not set.",
            "Copy UPSTASH_REDIS_REST_TOKEN from the Upstash console (database -> 'REST API') "
            "into .env.local and the Vercel project's Environment Variables.",
        )
    value, bad = _hygiene(name, raw)
    if bad:
        return bad
    if bad := _placeholder(name, value):
        return bad
    if value.lower().startswith(("http://", "https://")):
        return (
            CheckStatus.FAIL,
            f"{name} holds a URL.",
            "Are UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN swapped?",
        )
    return CheckStatus.PASS, f"Set ({shape(value)}).", ""


async def _config_event_key(ctx: _Context) -> Outcome:
    name = "INNGEST_EVENT_KEY"
    raw = ctx.values.get(name)
    cloud = bool(ctx.values.get("INNGEST_SIGNING_KEY"))
    if not raw:
        if ctx.local and not cloud:
            raise _Skip("Unset; fine in dev mode (a local Inngest server takes any event key).")
        return (
            CheckStatus.FAIL,
            f"{name} is not set: the app cannot send the event that starts a run.",
            "Inngest -> Settings -> Event Keys: copy the event key and store it as "
            "INNGEST_EVENT_KEY (.env.local and Vercel). For a local Inngest Dev Server set "
            "INNGEST_BASE_URL=http://127.0.0.1:8288 instead.",
        )
    value, bad = _hygiene(name, raw)
    if bad:
        return bad
    if value.startswith("signkey"):
        return (
            CheckStatus.FAIL,
            f"{name} holds a signing key ({shape(value)}).",
            "INNGEST_EVENT_KEY and INNGEST_SIGNING_KEY look swapped: the event key is under "
            "Settings -> Event Keys, the signing key under Settings -> Signing Keys.",
        )
    if bad := _placeholder(name, value):
        return bad
    if value == (ctx.values.get("INNGEST_SIGNING_KEY") or "").strip():
        return (
            CheckStatus.FAIL,
            f"{name} is the same value as INNGEST_SIGNING_KEY.",
            "Copy the event key from Inngest -> Settings -> Event Keys.",
        )
    if value.startswith("evt_"):
        return (
            CheckStatus.WARN,
            f"{name} starts with evt_ ({shape(value)}): the guide's `evt_...` is an example; "
            "real Inngest event keys have no such prefix.",
            "Make sure you copied the key itself from Inngest -> Settings -> Event Keys.",
        )
    return CheckStatus.PASS, f"Set ({shape(value)}).", ""


def _signing_key_outcome(name: str, raw: str, values: Mapping[str, str | None]) -> Outcome:
    value, bad = _hygiene(name, raw)
    if bad:
        return bad
    guide = (
        "Inngest -> Settings -> Signing Keys: copy the key (it looks like "
        f"signkey-prod-<hex>) into {name} (.env.local and Vercel)."
    )
    if value.startswith("signkey_"):
        return (
            CheckStatus.FAIL,
            f"{name} is in the guide's placeholder format `signkey_...` ({shape(value)}); "
            "real signing keys look like signkey-<env>-<hex>.",
            guide,
        )
    event_key = (values.get("INNGEST_EVENT_KEY") or "").strip()
    if value.startswith("evt_") or (event_key and value == event_key):
        return (
            CheckStatus.FAIL,
            f"{name} holds an event key ({shape(value)}).",
            "INNGEST_EVENT_KEY and INNGEST_SIGNING_KEY look swapped. " + guide,
        )
    if bad := _placeholder(name, value):
        return bad
    match = _SIGNING_KEY.match(value)
    if match is None:
        swapped = " (the keys look swapped)" if event_key.startswith("signkey") else ""
        return (
            CheckStatus.FAIL,
            f"{name} is not in the signkey-<env>-<hex> format ({shape(value)}){swapped}.",
            guide,
        )
    body = match.group(2)
    if not body or len(body) % 2 or re.fullmatch(r"[0-9a-fA-F]+", body) is None:
        return (
            CheckStatus.FAIL,
            f"{name} is not hexadecimal after its signkey-{match.group(1)}- prefix "
            f"({shape(value)}): truncated or mistyped?",
            guide,
        )
    return CheckStatus.PASS, f"Set ({shape(value)}).", ""


async def _config_signing_key(ctx: _Context) -> Outcome:
    name = "INNGEST_SIGNING_KEY"
    raw = ctx.values.get(name)
    if not raw:
        if ctx.local:
            raise _Skip("Unset; fine in dev mode (the app does not check signatures).")
        return (
            CheckStatus.FAIL,
            f"{name} is not set: without it the app runs in dev mode, talks to a local Inngest "
            "Dev Server (127.0.0.1:8288) and Inngest Cloud cannot call it.",
            "Inngest -> Settings -> Signing Keys: copy the key into INNGEST_SIGNING_KEY "
            "(.env.local and Vercel). For a local Inngest Dev Server set "
            "INNGEST_BASE_URL=http://127.0.0.1:8288.",
        )
    outcome = _signing_key_outcome(name, raw, ctx.values)
    if outcome[0] is CheckStatus.PASS and ctx.local:
        return CheckStatus.PASS, f"{outcome[1]} Cloud mode: the app checks signatures.", ""
    return outcome


async def _config_signing_key_fallback(ctx: _Context) -> Outcome:
    name = "INNGEST_SIGNING_KEY_FALLBACK"
    raw = ctx.values.get(name)
    if not raw:
        raise _Skip("Unset (optional: only needed while rotating the signing key).")
    outcome = _signing_key_outcome(name, raw, ctx.values)
    primary = (ctx.values.get("INNGEST_SIGNING_KEY") or "").strip()
    if outcome[0] is CheckStatus.PASS and raw.strip() == primary:
        return (
            CheckStatus.WARN,
            f"{name} is the same as INNGEST_SIGNING_KEY.",
            "Set it to the previous key while rotating, or unset it.",
        )
    return outcome


async def _config_openai_key(ctx: _Context) -> Outcome:
    name = "OPENAI_API_KEY"
    raw = ctx.values.get(name)
    if not raw:
        return (
            CheckStatus.FAIL,
            f"{name} is not set: every run would fail at its first model call.",
            "Create a key at https://platform.openai.com/api-keys and set OPENAI_API_KEY "
            "(.env.local and Vercel); locally, `tripkit dev` prints one for its model server.",
        )
    value, bad = _hygiene(name, raw)
    if bad:
        return bad
    if bad := _placeholder(name, value):
        return bad
    if value.startswith(("signkey", "evt_")):
        return (
            CheckStatus.FAIL,
            f"{name} holds an Inngest key ({shape(value)}).",
            "Set OPENAI_API_KEY to the OpenAI key (sk-...).",
        )
    if value.startswith("sk-"):
        return CheckStatus.PASS, f"Set ({shape(value)}).", ""
    base = ctx.values.get("OPENAI_BASE_URL")
    if base and not base.startswith(OPENAI_DEFAULT_BASE):
        return CheckStatus.PASS, f"Set ({shape(value)}); for the endpoint at {base}.", ""
    return (
        CheckStatus.WARN,
        f"{name} does not start with sk- ({shape(value)}), as OpenAI keys do.",
        "Check OpenAI API key is valid (openai.model tries it).",
    )


# --- Redis ---------------------------------------------------------------------------------


def _store_transport(ctx: _Context) -> tuple[Transport, str]:
    """Upstash REST when it is configured (the guide's setup), else REDIS_URL."""
    s = ctx.need_settings()
    if s.upstash_redis_rest_url is not None:
        from tripkit.transport.rest import RestTransport

        if s.upstash_redis_rest_token is None:
            raise ConfigError(
                "UPSTASH_REDIS_REST_TOKEN is not set.",
                remedy="Copy it from the Upstash console ('REST API' section) into .env.local.",
            )
        token = s.upstash_redis_rest_token.get_secret_value()
        transport = RestTransport(s.upstash_redis_rest_url, token, timeout=ctx.timeout)
        return (
            transport,
            f"Upstash REST at {urllib.parse.urlsplit(s.upstash_redis_rest_url).netloc}",
        )
    if s.redis_url is not None:
        from tripkit.transport.resp import RespTransport

        url = s.redis_url.get_secret_value()
        return RespTransport(url, timeout=ctx.timeout), f"REDIS_URL {mask_url(url)}"
    raise ConfigError(
        "No Redis is configured.",
        remedy="Set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN (Upstash console, "
        "'REST API' section) in .env.local and Vercel.",
    )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _upstash_ping(ctx: _Context) -> Outcome:
    s = ctx.need_settings()
    if s.upstash_redis_rest_url is None and s.redis_url is not None:
        raise _Skip("Upstash REST is not configured; REDIS_URL is checked by redis.ping.")
    transport, where = _store_transport(ctx)
    try:
        started = time.perf_counter()
        reply = await transport.execute("PING", retry_safe=True)
        ms = _ms(started)
    finally:
        await transport.aclose()
    if reply != b"PONG":
        return CheckStatus.FAIL, f"PING answered {reply!r} at {where}.", _REDIS_REMEDY
    return CheckStatus.PASS, f"PONG in {ms:.1f} ms from {where}.", ""


_REDIS_REMEDY = (
    "Check Upstash Redis credentials are correct and verify the Redis instance is active "
    "(is the database paused?)."
)


async def _upstash_roundtrip(ctx: _Context) -> Outcome:
    s = ctx.need_settings()
    transport, where = _store_transport(ctx)
    key = f"{s.key_prefix}:check:{secrets.token_hex(8)}"
    value = secrets.token_hex(8)
    written = False
    try:
        started = time.perf_counter()
        if await transport.execute("SET", key, value, "EX", 60) != b"OK":
            return CheckStatus.FAIL, f"SET did not answer OK at {where}.", _REDIS_REMEDY
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
        await transport.aclose()
    if read != value.encode():
        return (
            CheckStatus.FAIL,
            f"GET returned another value than SET wrote at {where}.",
            ("Is this a replica that lags, or a read-only token? Check the Upstash console."),
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
    import json
    from importlib import resources

    try:
        text = resources.files("tripkit").joinpath("data/plan_limits.json").read_text("utf-8")
        item = json.loads(text)["profiles"]["current"]["limits"]["redis_storage_bytes"]
        return int(item["value"]), f"{item['source']}, {item['date']}"
    except (OSError, ValueError, KeyError, TypeError):
        return FREE_TIER_DATA_BYTES, FREE_TIER_SOURCE


async def _upstash_memory(ctx: _Context) -> Outcome:
    transport, where = _store_transport(ctx)
    try:
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
    finally:
        await transport.aclose()
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


async def _redis_ping(ctx: _Context) -> Outcome:
    s = ctx.need_settings()
    if s.redis_url is None:
        raise _Skip("REDIS_URL is not set (optional: Upstash REST is the guide's way).")
    from tripkit.transport.resp import RespTransport

    url = s.redis_url.get_secret_value()
    transport = RespTransport(url, timeout=ctx.timeout)
    try:
        started = time.perf_counter()
        reply = await transport.execute("PING", retry_safe=True)
        ms = _ms(started)
    finally:
        await transport.aclose()
    if reply != b"PONG":
        return CheckStatus.FAIL, f"PING answered {reply!r} at {mask_url(url)}.", _REDIS_REMEDY
    return CheckStatus.PASS, f"PONG in {ms:.1f} ms from {mask_url(url)}.", ""


# --- Inngest --------------------------------------------------------------------------------


async def _inngest_event_api(ctx: _Context) -> Outcome:
    import inngest

    from tripkit.worker import inngest_client

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
        lowered = text.lower()
        if "never received response" in lowered:
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


def _app_base(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "The app URL is not an http(s):// URL.",
            remedy="Pass --api-url https://your-vercel-url.vercel.app (or set TRIPKIT_API_URL).",
        )
    return url.removesuffix(SERVE_PATH)


async def _get(ctx: _Context, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    try:
        async with httpx.AsyncClient(timeout=ctx.timeout, follow_redirects=True) as http:
            return await http.get(url, headers=headers)
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


_NOT_SDK_REMEDY = (
    "Check Vercel function logs for /api/inngest route. If Vercel Deployment Protection is on, "
    "Inngest cannot reach the endpoint either: allow it (Protection Bypass for Automation)."
)


async def _signed_inspection(ctx: _Context, base: str, key: str) -> httpx.Response:
    return await _get(ctx, base + SERVE_PATH, {signing.HEADER: signing.sign(b"", key)})


async def _inngest_serve(ctx: _Context) -> Outcome:
    s = ctx.need_settings()
    base = ctx.need_api_url()
    url = base + SERVE_PATH
    started = time.perf_counter()
    response = await _get(ctx, url)
    ms = _ms(started)
    if not _sdk_answered(response):
        return (
            CheckStatus.FAIL,
            f"{url} answered HTTP {response.status_code}, not from the Inngest SDK.",
            _NOT_SDK_REMEDY,
        )
    key = s.inngest_signing_key.get_secret_value() if s.inngest_signing_key else None
    body = _json(response) or {}
    if response.status_code == 200 and body.get("mode") == "dev":
        if key is not None:
            return (
                CheckStatus.FAIL,
                f"{url} runs in dev mode (no signing key in its environment) in {ms:.0f} ms; "
                "Inngest Cloud cannot call it.",
                "Set INNGEST_SIGNING_KEY in the app's environment (Vercel Environment "
                "Variables, all environments) and redeploy.",
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
        signed = await _signed_inspection(ctx, base, key)
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


async def _inngest_function(ctx: _Context) -> Outcome:
    from tripkit.worker import APP_ID, EVENT_NAME, FUNCTION_ID, FUNCTION_NAME

    s = ctx.need_settings()
    if s.inngest_base_url is None:
        raise _Skip("Inngest Cloud: the function list is in the dashboard.", DASHBOARD_REMEDY)
    url = f"{s.inngest_base_url}/v1/functions"
    response = await _get(ctx, url)
    if response.status_code == 404:
        raise _Skip(
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
    wanted = f"{APP_ID}-{FUNCTION_ID}"
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
    if ctx.api_url:
        expected = _app_base(ctx.api_url) + SERVE_PATH
        if endpoint and endpoint != expected:
            return (
                CheckStatus.WARN,
                detail + f" This app is at {expected}.",
                "Verify Inngest endpoint is registered correctly: " + sync_remedy,
            )
    return CheckStatus.PASS, detail, ""


async def _inngest_signing(ctx: _Context) -> Outcome:
    s = ctx.need_settings()
    if s.inngest_signing_key is None:
        raise _Skip("No INNGEST_SIGNING_KEY: dev mode, requests are not signed.")
    base = ctx.need_api_url()
    key = s.inngest_signing_key.get_secret_value()
    url = base + SERVE_PATH
    started = time.perf_counter()
    response = await _signed_inspection(ctx, base, key)
    ms = _ms(started)
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
                fallback=(
                    s.inngest_signing_key_fallback.get_secret_value()
                    if s.inngest_signing_key_fallback
                    else None
                ),
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
            "Set INNGEST_SIGNING_KEY in the app's environment (Vercel Environment Variables, "
            "all environments) and redeploy.",
        )
    if not _sdk_answered(response):
        return (
            CheckStatus.FAIL,
            f"{url} answered HTTP {response.status_code}, not from the Inngest SDK.",
            _NOT_SDK_REMEDY,
        )
    return (
        CheckStatus.FAIL,
        f"{url} answered the signed request with HTTP {response.status_code}.",
        match_remedy,
    )


# --- OpenAI and the app ---------------------------------------------------------------------


async def _openai_model(ctx: _Context) -> Outcome:
    import openai

    s = ctx.need_settings()
    base = s.openai_base_url or OPENAI_DEFAULT_BASE
    if s.openai_api_key is None:
        return (
            CheckStatus.FAIL,
            "OPENAI_API_KEY is not set.",
            "Check OPENAI_API_KEY: set it in .env.local and Vercel.",
        )
    key_remedy = (
        "Check OPENAI_API_KEY: the key is invalid or revoked. Check OpenAI API key is valid "
        "(https://platform.openai.com/api-keys) and set it in .env.local and Vercel."
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
        return CheckStatus.FAIL, f"{base} refused OPENAI_API_KEY (HTTP 401).", key_remedy
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
            ("Check the network to the model API (OPENAI_BASE_URL)."),
        )
    except openai.APIConnectionError:
        return (
            CheckStatus.FAIL,
            f"Cannot reach the model API at {base}.",
            ("Check OPENAI_BASE_URL and the network; locally, is `tripkit dev` running?"),
        )
    except openai.APIStatusError as exc:
        return (
            CheckStatus.FAIL,
            f"{base} answered HTTP {exc.status_code}.",
            ("The model API is failing; try again later."),
        )
    ms = _ms(started)
    return (
        CheckStatus.PASS,
        f"Key accepted; model {model.id} available at {base} ({ms:.0f} ms).",
        "",
    )


async def _app_health(ctx: _Context) -> Outcome:
    base = ctx.need_api_url()
    url = base + "/healthz"
    started = time.perf_counter()
    response = await _get(ctx, url)
    ms = _ms(started)
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


# --- the registry ---------------------------------------------------------------------------

_SLOW_REDIS = (
    "Redis did not answer in time: check the network to the Redis region (is the database "
    "paused?), or raise TRIPKIT_REDIS_TIMEOUT."
)
_SLOW_APP = "The app did not answer in time: is it deployed and running?"

CHECKS: dict[str, _Check] = {
    c.id: c
    for c in (
        _Check("config.settings", "The settings load and are consistent", _config_settings),
        _Check(
            "config.UPSTASH_REDIS_REST_URL",
            "UPSTASH_REDIS_REST_URL is an https URL",
            _config_rest_url,
        ),
        _Check(
            "config.UPSTASH_REDIS_REST_TOKEN",
            "UPSTASH_REDIS_REST_TOKEN is set, without quotes or spaces",
            _config_rest_token,
        ),
        _Check(
            "config.INNGEST_EVENT_KEY",
            "INNGEST_EVENT_KEY is set and is not the signing key",
            _config_event_key,
        ),
        _Check(
            "config.INNGEST_SIGNING_KEY",
            "INNGEST_SIGNING_KEY is a signkey-<env>-<hex> key",
            _config_signing_key,
        ),
        _Check(
            "config.INNGEST_SIGNING_KEY_FALLBACK",
            "INNGEST_SIGNING_KEY_FALLBACK, if set, is a signing key",
            _config_signing_key_fallback,
        ),
        _Check(
            "config.OPENAI_API_KEY",
            "OPENAI_API_KEY is set and looks like a key",
            _config_openai_key,
        ),
        _Check("upstash.ping", "Upstash REST: PING", _upstash_ping, _SLOW_REDIS),
        _Check(
            "upstash.roundtrip",
            "Upstash REST: write, read and delete with a TTL",
            _upstash_roundtrip,
            _SLOW_REDIS,
        ),
        _Check(
            "upstash.memory",
            "Upstash: data size against the 256 MB free tier",
            _upstash_memory,
            _SLOW_REDIS,
        ),
        _Check("redis.ping", "REDIS_URL: PING over RESP", _redis_ping, _SLOW_REDIS),
        _Check(
            "inngest.event_api",
            "Inngest event API: the event key is accepted (no run started)",
            _inngest_event_api,
            "Inngest's event API did not answer in time: check INNGEST_BASE_URL and the network.",
        ),
        _Check(
            "inngest.serve",
            "The app's /api/inngest answers in the expected mode with its function",
            _inngest_serve,
            _SLOW_APP,
        ),
        _Check(
            "inngest.function",
            "generate-bundles is registered with Inngest",
            _inngest_function,
            "The Inngest server did not answer in time.",
        ),
        _Check(
            "inngest.signing",
            "INNGEST_SIGNING_KEY matches the app's key",
            _inngest_signing,
            _SLOW_APP,
        ),
        _Check(
            "openai.model",
            "OpenAI: the key is valid and the model available",
            _openai_model,
            "The model API did not answer in time: check OPENAI_BASE_URL and the network.",
        ),
        _Check("app.health", "The app's /healthz reports ok", _app_health, _SLOW_APP),
    )
}


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


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
