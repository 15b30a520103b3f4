"""From notebook 03's parameters to a :class:`~tripkit.usage.report.UsageReport`.

:func:`build_report` checks the parameters, gathers the data (harvesting Redis into the
history CSV, or reading that CSV; the services' saved answers), keeps the period's
generations with their estimates, and projects the volume. It is the one place the report
does I/O, so the report's content (:mod:`tripkit.usage.report`) stays pure. The
notebook's parameters map 1:1 to its arguments (:func:`report_parameters`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tripkit.paths import history_csv as default_history_csv
from tripkit.paths import in_root, shown
from tripkit.usage.costs import (
    estimates,
    in_period,
    observed_rate,
    parse_period_end,
    tokens_by_model,
)
from tripkit.usage.history import (
    harvest_from_redis,
    inngest_runs_table,
    read_history,
    upstash_stats,
)
from tripkit.usage.plans import UsageError, openai_prices, plan, profiles
from tripkit.usage.projections import PerGeneration
from tripkit.usage.report import UsageReport

__all__ = ["REPORT_PARAMETERS", "build_report", "report_parameters"]


async def build_report(
    *,
    period_days: int = 30,
    plan_profile: str = "current",
    poll_interval: float = 2.0,
    read_regions: int = 0,
    data_source: str = "redis",
    history_csv: str | Path | None = None,
    upstash_stats_json: str | Path | None = None,
    inngest_runs_json: str | Path | None = None,
    generations_per_day: float | None = None,
    env_dir: str | Path | None = None,
    period_end: str | date | datetime | None = None,
    ttl_s: float | None = None,
) -> UsageReport:
    """Gather the data (harvesting Redis when ``data_source='redis'``) and compute the
    report; the notebook's parameters map 1:1 to these arguments. Relative paths, and
    ``.env.local`` when ``env_dir`` is None, are found under the project root
    (:mod:`tripkit.paths`), whatever the kernel's working directory."""
    history_csv = in_root(history_csv) if history_csv is not None else default_history_csv()
    chosen = plan(plan_profile)
    others = [plan(name) for name in profiles() if name != plan_profile]
    if data_source not in ("redis", "csv"):
        raise UsageError(f"data_source must be 'redis' or 'csv', not {data_source!r}.")
    if not (isinstance(period_days, int | float) and period_days >= 1):
        raise UsageError(f"period_days must be a number of days >= 1, not {period_days!r}.")
    if not (isinstance(poll_interval, int | float) and poll_interval > 0):
        raise UsageError(f"poll_interval must be a positive number, not {poll_interval!r}.")
    if not (isinstance(read_regions, int) and read_regions >= 0):
        raise UsageError(f"read_regions must be an integer >= 0, not {read_regions!r}.")
    end = parse_period_end(period_end)
    harvest_info = None
    if data_source == "redis":
        history, harvest_info = await harvest_from_redis(history_csv, env_dir=env_dir)
        if ttl_s is None:
            from tripkit.config import load_settings

            ttl_s = float(load_settings(env_dir).session_ttl)
    else:
        history = read_history(history_csv)
    prices = openai_prices()
    period = estimates(in_period(history, period_days, end), poll_interval, read_regions)
    per = PerGeneration.observed(period, prices)
    if generations_per_day is None:
        volume = observed_rate(period, period_days, end)
        basis = "the observed rate" if not period.empty else "none observed"
    else:
        if not (isinstance(generations_per_day, int | float) and generations_per_day >= 0):
            raise UsageError(f"generations_per_day must be >= 0, not {generations_per_day!r}.")
        volume, basis = float(generations_per_day), "the generations_per_day parameter"
    notes: list[str] = []
    if period.empty and generations_per_day is None:
        notes.append("No generations observed: set generations_per_day to project a volume.")
    _, token_notes = tokens_by_model(period, prices)
    notes += token_notes
    upstash = (
        upstash_stats(_read_json(upstash_stats_json, "Upstash stats"))
        if upstash_stats_json
        else None
    )
    runs = (
        inngest_runs_table(_read_json(inngest_runs_json, "Inngest runs"))
        if inngest_runs_json
        else None
    )
    return UsageReport(
        period_days=int(period_days),
        end=end,
        plan=chosen,
        plans=[chosen, *others],
        poll_interval=float(poll_interval),
        read_regions=read_regions,
        data_source=f"{data_source} (history: {shown(history_csv)})",
        generations=period,
        per=per,
        generations_per_day=volume,
        volume_basis=basis,
        ttl_s=float(ttl_s if ttl_s is not None else 3600),
        prices=prices,
        harvest=harvest_info,
        upstash=upstash,
        inngest_runs=runs,
        extra_notes=notes,
    )


#: The notebook's parameters, in order: :func:`build_report`'s arguments.
REPORT_PARAMETERS = (
    "period_days",
    "plan_profile",
    "poll_interval",
    "read_regions",
    "data_source",
    "history_csv",
    "upstash_stats_json",
    "inngest_runs_json",
    "generations_per_day",
    "env_dir",
    "period_end",
)


def report_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The report's parameters found in ``namespace`` (a notebook's ``globals()``), so the
    notebook passes what papermill injected without repeating every name."""
    return {name: namespace[name] for name in REPORT_PARAMETERS if name in namespace}


# --------------------------------------------------------------------------- helpers


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"No {what} file at {path}.") from None
    except ValueError as exc:
        raise UsageError(f"The {what} file {path} is not JSON: {exc}.") from None
