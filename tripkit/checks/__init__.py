"""``tripkit check``: every verifiable step of the setup guide, as a check that measures
against the real services and, when it is not green, says what to do in the guide's words.

Where to start reading:

- :mod:`.guide`: the guide as data, the checks in its order (:data:`CHECKS`), its steps
  and its troubleshooting entries;
- :mod:`.runner`: :func:`run_checks` (a loaded :class:`~tripkit.config.Settings`) and
  :func:`check_environment` (what ``tripkit check`` runs), the timeouts, the scrubbing of
  secrets, and the reading of the results;
- :mod:`.core`: what a check is (the ``@check`` decorator), what it reads, what it returns;
- the checks, one module per service: :mod:`.variables` (the configuration),
  :mod:`.upstash` (Redis), :mod:`.inngest_setup`, :mod:`.model_api` and :mod:`.app`; what
  they share in :mod:`.probes`, and :mod:`.endpoints` (whether an endpoint is one the
  deployed app can reach: checking the real services, one on this machine fails).

A failed service is a ``FAIL`` result, never an exception; nothing is started; no secret
is shown.
"""

from __future__ import annotations

from tripkit.checks.core import (
    CONFIGURATION,
    OPENAI_DEFAULT_BASE,
    PLAIN_VARIABLES,
    SECRET_VARIABLES,
    STEP_1,
    STEP_2,
    STEP_4,
    STEP_5,
    STEPS,
    CheckResult,
    CheckStatus,
    Diagnosis,
    Outcome,
    shape,
)
from tripkit.checks.guide import ADVICE, CHECKS, GUIDE_STEPS, TROUBLESHOOTING
from tripkit.checks.inngest_setup import DASHBOARD_REMEDY, PING_EVENT
from tripkit.checks.runner import (
    check_environment,
    counts,
    diagnose,
    format_text,
    read_environment,
    run_checks,
    select,
    summary_table,
)
from tripkit.checks.upstash import (
    FREE_TIER_DATA_BYTES,
    FREE_TIER_SOURCE,
    MEMORY_WARN_FRACTION,
    free_tier_data_size,
)
from tripkit.constants import SERVE_PATH

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
