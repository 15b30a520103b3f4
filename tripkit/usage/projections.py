"""A month of generations at a volume, against each plan: what fits the free tier, how
much of each limit it uses, and what it costs past the free tier.

A generation here is a :class:`PerGeneration`: the observed means (or the setup guide's
typical one when none were observed), priced with :mod:`tripkit.usage.costs`' formulas
and held against a :class:`~tripkit.usage.plans.Plan`'s limits. Kept apart from
:mod:`~tripkit.usage.costs`, whose numbers are measured, because these rest on
assumptions: a 30-day month, a steady volume, the mean generation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tripkit.usage.costs import (
    Mode,
    executions_per_generation,
    polls_per_generation,
    redis_commands_by_mode,
    redis_commands_per_generation,
    steps_per_generation,
    tokens_by_model,
)
from tripkit.usage.plans import DAYS_PER_MONTH, Plan

__all__ = [
    "ORIGINAL_WORKLOAD",
    "POLL_INTERVALS",
    "TYPICAL_DURATION_S",
    "ModeCapacity",
    "PerGeneration",
    "fit_table",
    "free_tier_fit",
    "mode_comparison",
    "monthly_usage",
    "projected_monthly_cost",
    "storage_bytes",
]

#: Poll intervals (s) of the "what fits the free tier" table.
POLL_INTERVALS = (1.0, 2.0, 5.0, 10.0)
#: A typical generation when none were observed: the setup guide's "3-8 minutes" and
#: "~180 requests" at 2 s (so 6 minutes), the app's default 3 bundles, and document sizes
#: measured on the local stack's demo (3 bundles).
TYPICAL_DURATION_S = 360.0
TYPICAL_BUNDLES = 3.0
TYPICAL_SESSION_BYTES = 4500.0
TYPICAL_RECORD_BYTES = 800.0


@dataclass(frozen=True)
class PerGeneration:
    """A generation as projections see it: observed means, or the typical assumption."""

    bundles: float = TYPICAL_BUNDLES
    duration_s: float = TYPICAL_DURATION_S
    retries: float = 0.0
    failed_share: float = 0.0
    session_bytes: float = TYPICAL_SESSION_BYTES
    record_bytes: float = TYPICAL_RECORD_BYTES
    usd_openai: float = math.nan
    basis: str = "assumed (no generations observed)"

    @classmethod
    def observed(cls, frame: pd.DataFrame, prices: Mapping[str, Any]) -> PerGeneration:
        if frame.empty:
            return cls()
        done = frame[frame["status"].eq("completed")]
        base = done if not done.empty else frame

        def mean(column: str, default: float, data: pd.DataFrame = base) -> float:
            value = data[column].mean()
            return default if pd.isna(value) else float(value)

        table, _ = tokens_by_model(frame, prices)
        cost = float(table["cost_usd"].sum(min_count=1)) / len(frame) if len(table) else math.nan
        return cls(
            bundles=mean("bundles", TYPICAL_BUNDLES),
            duration_s=mean("duration_s", TYPICAL_DURATION_S, frame),
            retries=mean("retries", 0.0, frame),
            failed_share=float(frame["status"].eq("failed").mean()),
            session_bytes=mean("session_bytes", TYPICAL_SESSION_BYTES),
            record_bytes=mean("record_bytes", TYPICAL_RECORD_BYTES),
            usd_openai=cost,
            basis=f"observed (mean of {len(frame)} generations)",
        )

    @property
    def steps(self) -> float:
        return steps_per_generation(self.bundles)

    def polls(self, poll_interval: float) -> int:
        return polls_per_generation(self.duration_s, poll_interval)

    def redis_commands(self, poll_interval: float, read_regions: int = 0) -> float:
        return (
            redis_commands_per_generation(
                self.bundles, self.polls(poll_interval), read_regions=read_regions
            )["total"]
            + self.failed_share * 1
        )  # a failure reads once more (on_failure)

    def executions(self, worst_case: bool = True) -> float:
        base = executions_per_generation(self.steps, self.retries, worst_case=worst_case)
        return base + 2 * self.failed_share

    def bytes_held(self) -> float:
        return self.session_bytes + self.record_bytes


#: The original app's workload, where issue 9's capacity targets are set: 5 bundles over
#: about 6 minutes, followed by one client.
ORIGINAL_WORKLOAD = PerGeneration(
    bundles=5.0, duration_s=TYPICAL_DURATION_S, basis="the original app's workload"
)


@dataclass(frozen=True)
class ModeCapacity:
    """One row of :func:`mode_comparison`: a mode's cost per generation and how many
    generations a month a plan's free tier carries (Redis and Inngest together)."""

    profile: str
    mode: Mode
    redis_commands_per_generation: float
    executions_per_generation: float
    redis_bound_per_month: float
    inngest_bound_per_month: float
    fits_per_month: float
    bound_by: str


def _inngest_bound_per_month(plan: Plan, per: PerGeneration) -> float:
    """Generations a month the plan's Inngest limits allow (retried attempts budgeted)."""
    bounds = []
    if (runs := plan.value("inngest_runs_per_month")) is not None:
        bounds.append(runs)
    if (steps := plan.value("inngest_steps_per_month")) is not None:
        bounds.append(steps / (per.steps + per.retries))
    if (execs := plan.value("inngest_executions_per_month")) is not None:
        bounds.append(execs / per.executions())
    return min(bounds) if bounds else math.inf


def mode_comparison(
    plans: Sequence[Plan],
    per: PerGeneration = ORIGINAL_WORKLOAD,
    poll_interval: float = 2.0,
    clients: int = 1,
) -> list[ModeCapacity]:
    """Poll and push side by side for each plan: Redis commands and Inngest executions
    per generation, and the generations a month that fit the free tier (whole ones)."""
    rows = []
    for p in plans:
        monthly = p.redis_commands_per_month
        inngest = _inngest_bound_per_month(p, per)
        modes: tuple[Mode, ...] = ("poll", "push")
        for mode in modes:
            commands = redis_commands_by_mode(
                mode, per.bundles, per.polls(poll_interval), clients=clients
            )["total"]
            redis = monthly / commands if monthly else math.inf
            rows.append(
                ModeCapacity(
                    profile=p.name,
                    mode=mode,
                    redis_commands_per_generation=commands,
                    executions_per_generation=per.executions(),
                    redis_bound_per_month=_whole(redis),
                    inngest_bound_per_month=_whole(inngest),
                    fits_per_month=_whole(min(redis, inngest)),
                    bound_by="Redis" if redis <= inngest else "Inngest",
                )
            )
    return rows


def _whole(value: float) -> float:
    return float(math.floor(value)) if math.isfinite(value) else math.inf


def storage_bytes(per: PerGeneration, generations_per_day: float, ttl_s: float) -> float:
    """Steady-state data: each generation's two keys live its duration plus the TTL.
    Payload bytes only; Redis adds some tens of bytes per key."""
    alive = generations_per_day * (per.duration_s + ttl_s) / 86400
    return alive * per.bytes_held()


def free_tier_fit(
    plan: Plan, per: PerGeneration, poll_interval: float, read_regions: int = 0
) -> dict[str, float]:
    """Generations a day the plan's free tier carries: Redis-bound, Inngest-bound, and the
    smaller of the two (executions counted worst case, retried attempts included)."""
    commands = per.redis_commands(poll_interval, read_regions)
    daily = plan.redis_commands_per_day
    redis_bound = daily / commands if daily else math.inf
    inngest_bound = _inngest_bound_per_month(plan, per) / DAYS_PER_MONTH
    return {
        "poll_interval_s": poll_interval,
        "redis_commands_per_generation": commands,
        "redis_bound_per_day": math.floor(redis_bound) if math.isfinite(redis_bound) else math.inf,
        "inngest_bound_per_day": (
            math.floor(inngest_bound) if math.isfinite(inngest_bound) else math.inf
        ),
        "fits_per_day": math.floor(min(redis_bound, inngest_bound)),
    }


def fit_table(
    plans: Sequence[Plan],
    per: PerGeneration,
    intervals: Sequence[float] = POLL_INTERVALS,
    read_regions: int = 0,
) -> pd.DataFrame:
    """:func:`free_tier_fit` for each profile and poll interval, with what binds."""
    rows = []
    for p in plans:
        for interval in intervals:
            fit = free_tier_fit(p, per, interval, read_regions)
            binding = (
                "Redis" if fit["redis_bound_per_day"] <= fit["inngest_bound_per_day"] else "Inngest"
            )
            rows.append({"profile": p.name, **fit, "bound_by": binding})
    return pd.DataFrame(rows)


def monthly_usage(
    plan: Plan,
    per: PerGeneration,
    generations_per_day: float,
    poll_interval: float,
    *,
    read_regions: int = 0,
    ttl_s: float = 3600,
    peak_concurrent: int = 0,
) -> pd.DataFrame:
    """Projected use against each of the plan's limits at a volume (30-day month)."""
    month = generations_per_day * DAYS_PER_MONTH
    commands = per.redis_commands(poll_interval, read_regions)
    rows: list[tuple[str, float, float | None, str]] = []

    def add(item: str, used: float, key: str) -> None:
        rows.append((item, used, plan.value(key), plan.cite(key)))

    if plan.value("redis_commands_per_day") is not None:
        add("Redis commands per day", commands * generations_per_day, "redis_commands_per_day")
    if plan.value("redis_commands_per_month") is not None:
        add("Redis commands per month", commands * month, "redis_commands_per_month")
    add(
        "Redis storage (bytes, steady state)",
        storage_bytes(per, generations_per_day, ttl_s),
        "redis_storage_bytes",
    )
    if plan.value("redis_bandwidth_bytes_per_month") is not None:
        # Upper bound: every poll returns the whole document at its final size.
        bandwidth = per.polls(poll_interval) * per.session_bytes + per.bytes_held() * per.steps
        add(
            "Redis bandwidth per month (bytes)",
            bandwidth * month,
            "redis_bandwidth_bytes_per_month",
        )
    if plan.value("inngest_runs_per_month") is not None:
        add("Inngest runs per month", month * (1 + per.failed_share), "inngest_runs_per_month")
    if plan.value("inngest_steps_per_month") is not None:
        add(
            "Inngest steps per month (retries counted)",
            month * (per.steps + per.retries + per.failed_share),
            "inngest_steps_per_month",
        )
    if plan.value("inngest_executions_per_month") is not None:
        add(
            "Inngest executions per month (retries counted)",
            month * per.executions(),
            "inngest_executions_per_month",
        )
    if plan.value("inngest_events_per_month") is not None:
        add("Inngest events per month", month * (1 + per.failed_share), "inngest_events_per_month")
    if plan.value("inngest_concurrent_steps") is not None:
        add("Inngest concurrent steps (observed peak)", peak_concurrent, "inngest_concurrent_steps")
    table = pd.DataFrame(rows, columns=["item", "projected", "limit", "source"])
    table.insert(0, "profile", plan.name)
    table["used_pct"] = 100 * table["projected"] / table["limit"]
    table["status"] = ["over" if u > 100 else "ok" for u in table["used_pct"]]
    return table


def projected_monthly_cost(
    plan: Plan,
    per: PerGeneration,
    generations_per_day: float,
    poll_interval: float,
    *,
    read_regions: int = 0,
    ttl_s: float = 3600,
) -> pd.DataFrame:
    """USD a month past the free tier at a volume: Redis at pay-as-you-go, Inngest where a
    price is known, OpenAI for all tokens (it has no free tier)."""
    month = generations_per_day * DAYS_PER_MONTH
    rows: list[dict[str, Any]] = []

    def add(service: str, item: str, used: float, free: float, cost: float, note: str) -> None:
        beyond = max(0.0, used - free) if not math.isnan(free) else used
        rows.append(
            {"service": service, "item": item, "monthly": used, "free": free}
            | {"beyond_free": beyond, "cost_usd": cost, "note": note}
        )

    price = plan.value("redis_usd_per_100k_commands") or math.nan
    per_day = per.redis_commands(poll_interval, read_regions) * generations_per_day
    if (daily := plan.value("redis_commands_per_day")) is not None:
        beyond = max(0.0, per_day - daily) * DAYS_PER_MONTH  # a daily limit resets daily
    else:
        beyond = max(0.0, per_day * DAYS_PER_MONTH - (plan.redis_commands_per_month or 0.0))
    add(
        "Upstash Redis",
        "commands",
        per_day * DAYS_PER_MONTH,
        plan.redis_commands_per_month or 0.0,
        beyond / 1e5 * price,
        "pay-as-you-go price on the commands past the free allowance",
    )
    if (gb_price := plan.value("redis_usd_per_gb_month_storage")) is not None:
        gb = storage_bytes(per, generations_per_day, ttl_s) / 2**30
        add(
            "Upstash Redis",
            "storage (GB)",
            gb,
            1.0,
            max(0.0, gb - 1) * gb_price,
            "pay-as-you-go: the first GB is included",
        )
    if (runs := plan.value("inngest_runs_per_month")) is not None:
        used = month * (1 + per.failed_share)
        if used <= runs:
            cost = 0.0
        elif used <= (plan.value("inngest_paid_runs_per_month") or 0.0):
            cost = plan.value("inngest_paid_usd_per_month") or math.nan
        else:
            cost = math.nan
        add("Inngest", "runs", used, runs, cost, "guide: $20/month for 10K runs; no price above")
    if (execs := plan.value("inngest_executions_per_month")) is not None:
        used = month * per.executions()
        cost = 0.0 if used <= execs else math.nan
        add("Inngest", "executions (retries counted)", used, execs, cost, "paid prices not found")
    add(
        "OpenAI",
        "tokens (USD at list price)",
        month,
        math.nan,
        per.usd_openai * month,
        "no free tier; observed cost per generation x volume",
    )
    table = pd.DataFrame(
        rows, columns=["service", "item", "monthly", "free", "beyond_free", "cost_usd", "note"]
    )
    table.insert(0, "profile", plan.name)
    return table
