"""What every check shares: the result types, what a check reads, and what may be shown."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import SecretStr

from tripkit import signing
from tripkit.config import Settings
from tripkit.constants import SERVE_PATH
from tripkit.errors import ConfigError

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


Outcome = tuple[CheckStatus, str, str]  # status, detail, remedy


class Stop(Exception):
    """Ends a check with this outcome, however deep in the check it is raised."""

    def __init__(self, status: CheckStatus, detail: str, remedy: str = "") -> None:
        super().__init__(detail)
        self.outcome: Outcome = (status, detail, remedy)


class Skip(Stop):
    def __init__(self, detail: str, remedy: str = "") -> None:
        super().__init__(CheckStatus.SKIP, detail, remedy)


class Fail(Stop):
    def __init__(self, detail: str, remedy: str) -> None:
        super().__init__(CheckStatus.FAIL, detail, remedy)


# --- what the checks read -------------------------------------------------------------------

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
#: The source of a variable set in the process's environment (which wins over the
#: dotenv files, so a stale export hides the value in .env.local).
ENVIRONMENT = "the environment"


@dataclass
class Context:
    """What the checks read: the raw values, the settings if they loaded, the app URL."""

    values: Mapping[str, str | None]
    settings: Settings | None
    settings_error: ConfigError | None
    api_url: str | None
    timeout: float
    cleaned: list[str] = field(default_factory=list)  # variables read without quotes/spaces
    #: Where /api/inngest is served when the worker runs apart from the API (split
    #: deployment, TRIPKIT_WORKER_URL); None: the app at api_url serves it.
    worker_url: str | None = None
    #: The offline stack is what is checked (``tripkit dev``): endpoints on this machine
    #: are expected. False (the real services): such an endpoint is a failure, since the
    #: deployed app cannot reach it and the checks would measure the wrong services.
    local_stack: bool = False
    #: Where each variable's value came from: "the environment" or a dotenv file's path
    #: (a variable missing here came from somewhere the checks were not told about).
    sources: Mapping[str, str] = field(default_factory=dict)
    #: Where an unset variable was looked for, as a phrase ("the environment, /x/.env.local
    #: and /x/.env"); None when the checks were given loaded settings.
    searched: str | None = None

    @property
    def local(self) -> bool:
        """Talking to a local Inngest server (INNGEST_BASE_URL), not Inngest Cloud."""
        return bool(self.values.get("INNGEST_BASE_URL"))

    def need_settings(self) -> Settings:
        if self.settings is None:
            raise Skip("The settings did not load.", "Fix the configuration first.")
        return self.settings

    def need_api_url(self) -> str:
        if not self.api_url:
            raise Skip(
                "No app URL given.",
                "Pass --api-url https://your-vercel-url.vercel.app (or set TRIPKIT_API_URL); "
                "locally, `tripkit dev` prints it.",
            )
        return app_base(self.api_url)

    def serve_base(self) -> str | None:
        """The base URL whose /api/inngest Inngest calls: the worker's, else the app's."""
        url = self.worker_url or self.api_url
        return app_base(url) if url else None

    def need_serve_base(self) -> str:
        """:meth:`serve_base`, or a skip with the usual remedy when no URL is given."""
        return app_base(self.worker_url) if self.worker_url else self.need_api_url()


def app_base(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "The app URL is not an http(s):// URL.",
            remedy="Pass --api-url https://your-vercel-url.vercel.app (or set TRIPKIT_API_URL).",
        )
    return url.removesuffix(SERVE_PATH)


# --- the guide's steps, and the checks that verify them --------------------------------------

CONFIGURATION = "Configuration"
STEP_1 = "Step 1: Upstash Redis"
STEP_2 = "Step 2: Inngest"
STEP_4 = "Step 4: Register the Inngest endpoint"
STEP_5 = "Step 5: Test the system"
#: In the guide's order. Step 3 (deploy) and step 6 (production run) have nothing to
#: verify beyond what steps 4 and 5 check.
STEPS = (CONFIGURATION, STEP_1, STEP_2, STEP_4, STEP_5)

Run = Callable[[Context], Awaitable[Outcome]]


@dataclass(frozen=True)
class Check:
    id: str
    step: str
    title: str
    run: Run
    timeout_remedy: str = ""


#: Every check, as registered by :func:`check` (tripkit.checks.CHECKS has the guide's order).
REGISTRY: dict[str, Check] = {}


def check(id: str, step: str, title: str, timeout_remedy: str = "") -> Callable[[Run], Run]:
    """Registers the decorated function as the check ``id``, verifying ``step``;
    ``timeout_remedy`` is the remedy when it does not finish in time."""

    def register(run: Run) -> Run:
        REGISTRY[id] = Check(id, step, title, run, timeout_remedy)
        return run

    return register


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


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def values_of(settings: Settings) -> dict[str, str | None]:
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


def raw_values(raw: Mapping[str, str]) -> dict[str, str | None]:
    return {name: (raw.get(name) or None) for name in (*SECRET_VARIABLES, *PLAIN_VARIABLES)}


def secret_values(values: Mapping[str, str | None]) -> list[str]:
    """Every form in which a configured secret could appear in a detail or a remedy."""
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


def scrub(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


def shape(value: str) -> str:
    """How a secret may be shown: its public prefix, if it has one, and its length."""
    match = _PUBLIC_PREFIX.match(value)
    prefix = match.group(1) if match else ""
    return f"{prefix}…, {len(value)} chars" if prefix else f"{len(value)} chars"
