"""The setup guide as data: its checks in its order, its steps, its troubleshooting entries.

:data:`CHECKS` is what the runner runs and in which order: by guide step, then by
:data:`CHECK_MODULES`, then as each module defines its checks.
"""

from __future__ import annotations

from types import ModuleType

from tripkit.checks import app, inngest_setup, model_api, upstash, variables
from tripkit.checks.core import REGISTRY, STEPS, Check
from tripkit.constants import SERVE_PATH

#: The modules that define checks, in the guide's order. Importing one registers its
#: checks; this tuple, not the order of the imports, decides the order within a step.
CHECK_MODULES: tuple[ModuleType, ...] = (variables, upstash, inngest_setup, model_api, app)
_MODULE_NAMES = [module.__name__ for module in CHECK_MODULES]


def _guide_order(item: tuple[str, Check]) -> tuple[int, int]:
    check = item[1]
    return STEPS.index(check.step), _MODULE_NAMES.index(check.run.__module__)


#: Every check, in the guide's order (a stable sort keeps each module's own order).
CHECKS: dict[str, Check] = dict(sorted(REGISTRY.items(), key=_guide_order))

#: The guide's steps (:data:`~tripkit.checks.core.STEPS`) in order, with the checks that
#: verify each.
GUIDE_STEPS: list[tuple[str, list[str]]] = [
    (step, [i for i, c in CHECKS.items() if c.step == step]) for step in STEPS
]


def _matches(check_id: str, wanted: str) -> bool:
    return check_id == wanted or check_id.startswith(wanted.rstrip(".") + ".")


def named(*wanted: str) -> list[str]:
    """The check ids that ``wanted`` names (ids or prefixes), in the order named."""
    unknown = [w for w in wanted if not any(_matches(i, w) for i in CHECKS)]
    if unknown:
        raise ValueError(f"unknown check ids or prefixes: {', '.join(unknown)}")
    return list(dict.fromkeys(i for w in wanted for i in CHECKS if _matches(i, w)))


#: The guide's troubleshooting entries -> the checks that diagnose them.
TROUBLESHOOTING: dict[str, list[str]] = {
    "Session not found": named(
        "config.UPSTASH_REDIS_REST_URL",
        "config.UPSTASH_REDIS_REST_TOKEN",
        "upstash",
        "redis",
        "app",
    ),
    "Function not executing": named(
        "config.INNGEST_EVENT_KEY",
        "config.INNGEST_SIGNING_KEY",
        "config.INNGEST_SIGNING_KEY_FALLBACK",
        "inngest",
    ),
    "Worker times out": named("config.OPENAI_API_KEY", "openai"),
    "Polling never completes": named(
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
        f"function logs for {SERVE_PATH} route."
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
