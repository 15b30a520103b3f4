"""Which environment a notebook talks to: the offline stack, or the real services.

``connect("local")`` uses the stack that ``tripkit dev`` (or ``make lab``, or the test
fixtures) exported into the environment, and starts one inside the kernel when there is
none; dotenv files are not read, so a real key in ``.env.local`` never reaches the local
stack. ``connect("real")`` reads the environment and ``.env.local``/``.env`` like the app
does, from the project root (:mod:`tripkit.paths`) unless told otherwise: a kernel runs in
``notebooks/``, where there is no ``.env.local``. Without an explicit environment the
notebooks use ``$TRIPKIT_ENVIRONMENT`` (``make lab`` sets it), else ``"local"``.
:func:`check_step` runs one of the setup guide's steps against that target.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tripkit import checks
from tripkit.checks import CheckResult
from tripkit.config import Settings, load_settings
from tripkit.errors import ConfigError
from tripkit.paths import project_root

Environment = Literal["local", "real"]
#: Which environment the notebooks target when their parameter is None.
ENVIRONMENT_VAR = "TRIPKIT_ENVIRONMENT"

#: What `tripkit dev` prints for a second shell, mapped to settings fields.
_STACK_VARS = {
    "UPSTASH_REDIS_REST_URL": "upstash_redis_rest_url",
    "UPSTASH_REDIS_REST_TOKEN": "upstash_redis_rest_token",
    "INNGEST_BASE_URL": "inngest_base_url",
    "OPENAI_BASE_URL": "openai_base_url",
    "OPENAI_API_KEY": "openai_api_key",
}
_stack: Any = None  # a LocalStack this kernel started, kept for the kernel's lifetime


@dataclass(frozen=True)
class Target:
    """Where a notebook's calls go."""

    environment: Environment
    settings: Settings
    api_url: str | None
    worker_url: str | None = None  # where /api/inngest is, when apart from the API

    def describe(self) -> dict[str, str]:
        """Safe to display: URLs without passwords, secrets as set/unset."""
        return {"environment": self.environment, "API": self.api_url or "unset"} | (
            self.settings.describe()
        )


def _local_settings() -> tuple[Settings, str, str | None]:
    global _stack
    if "TRIPKIT_API_URL" not in os.environ:
        from tripkit.devstack.stack import LocalStack, StackConfig

        if _stack is None:
            _stack = LocalStack(StackConfig(chunk_delay=0.01)).start()
            atexit.register(_stack.stop)
        env: dict[str, str] = dict(_stack.env)
    else:
        urls = ("TRIPKIT_API_URL", "TRIPKIT_WORKER_URL")
        env = {k: v for k, v in os.environ.items() if k in _STACK_VARS or k in urls}
    missing = [name for name in _STACK_VARS if name not in env]
    if missing:
        raise ConfigError(
            "The local stack's variables are incomplete: " + ", ".join(missing) + " missing.",
            remedy="Export every KEY=VALUE line that `tripkit dev` printed, or unset "
            "TRIPKIT_API_URL to let the notebook start its own stack.",
        )
    overrides = {field: env[var] for var, field in _STACK_VARS.items()}
    # Anything real in the kernel's environment is overridden, not inherited.
    settings = load_settings(
        Path(os.devnull),
        redis_transport="rest",
        redis_url=None,
        inngest_event_key=None,
        inngest_signing_key=None,
        inngest_signing_key_fallback=None,
        **overrides,
    )
    return settings, env["TRIPKIT_API_URL"], env.get("TRIPKIT_WORKER_URL")


def resolve_environment(environment: str | None) -> Environment:
    """``environment``, else ``$TRIPKIT_ENVIRONMENT``, else ``"local"``; anything but
    ``"local"`` or ``"real"`` is refused."""
    chosen = environment or os.environ.get(ENVIRONMENT_VAR, "").strip() or "local"
    if chosen == "local":
        return "local"
    if chosen == "real":
        return "real"
    source = "environment" if environment else f"${ENVIRONMENT_VAR}"
    raise ConfigError(
        f"Unknown {source} {chosen!r}.",
        remedy='Use "local" (the offline stack) or "real" (the services in .env.local).',
    )


def connect(environment: str | None = None, *, env_dir: str | Path | None = None) -> Target:
    """The environment a notebook targets: the offline stack, or the real services."""
    environment = resolve_environment(environment)
    if environment == "local":
        settings, api_url, worker_url = _local_settings()
        return Target("local", settings, api_url, worker_url)
    settings = load_settings(env_dir)
    return Target(
        "real",
        settings,
        os.environ.get("TRIPKIT_API_URL"),
        os.environ.get("TRIPKIT_WORKER_URL"),
    )


async def check_step(
    step: str,
    environment: str | None = None,
    *,
    env_dir: str | Path | None = None,
    api_url: str | None = None,
) -> list[CheckResult]:
    """Run the checks of one of the guide's steps (see :data:`tripkit.checks.GUIDE_STEPS`).

    Locally they run against the stack :func:`connect` finds or starts; for the real
    environment they read ``.env.local`` (in ``env_dir``, default the project root) the
    way ``tripkit check`` does, so a malformed value is reported as a failed check instead
    of stopping the notebook.
    """
    ids = dict(checks.GUIDE_STEPS)[step]
    if resolve_environment(environment) == "local":
        target = connect("local")
        return await checks.run_checks(
            target.settings,
            api_url=api_url or target.api_url,
            worker_url=target.worker_url,
            only=ids,
            local_stack=True,
        )
    folder = env_dir if env_dir is not None else project_root()
    return await checks.check_environment(folder, api_url=api_url, only=ids)
