"""What the generations cost, against the plans' free tiers: the usage report's numbers.

Upstash bills every Redis command, Inngest every run and step, OpenAI every token; the
setup guide promises all of it fits the free tiers. The functions here put numbers on
that, from what the generations actually did: per generation, per day and per month,
and what a plan's free tier carries. They are pure: the run records and the services'
stats come as tables from :mod:`tripkit.usage.history`, the limits from
:mod:`tripkit.usage.plans`, and :mod:`tripkit.usage.report` makes the notebook's tables
and charts of them.

The Redis cost of one generation (:func:`redis_commands_per_generation`, asserted against
a real run in the tests): create 1 + writes (running 1, one per bundle summary,
complete 1) + the worker's read 1 + the run record 1 + the client's polls. The polls
dominate: a 6-minute generation polled every 2 s is ~181 GETs against 8 other commands.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from tripkit.usage.plans import DAYS_PER_MONTH, Plan, UsageError

__all__ = [
    "POLL_INTERVALS",
    "TYPICAL_DURATION_S",
    "PerGeneration",
    "commands_per_day",
    "estimates",
    "executions_per_generation",
    "fit_table",
    "free_tier_fit",
    "in_period",
    "monthly_usage",
    "observed_rate",
    "parse_period_end",
    "peak_concurrency",
    "polls_per_generation",
    "projected_monthly_cost",
    "redis_commands_per_generation",
    "storage_bytes",
    "timing_stats",
    "token_cost",
    "tokens_by_model",
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


# --------------------------------------------------------------------------- per generation


def polls_per_generation(duration_s: float, poll_interval: float) -> int:
    """Polls a client makes over a generation: one at once, then one per interval until
    it sees the final status (``ceil(duration / interval) + 1``; request latency makes
    the real count at most this)."""
    if poll_interval <= 0:
        raise UsageError(f"poll_interval must be positive, not {poll_interval}.")
    if math.isnan(duration_s):
        return 0
    return math.ceil(max(duration_s, 0.0) / poll_interval - 1e-9) + 1


def redis_commands_per_generation(
    bundles: float,
    polls: float,
    *,
    failed: bool = False,
    summaries: float | None = None,
    read_regions: int = 0,
) -> dict[str, float]:
    """Billed Redis commands of one generation, by source (see the module docstring).

    Completed: create 1, writes 2 + ``bundles`` (running, one summary each, complete),
    worker read 1, run record 1, polls. Failed: the summaries written before the failure
    (default 0) and ``fail`` (GET + SET) instead of the summaries and complete. A global
    database bills each write again per read region (``read_regions``).
    """
    if failed:
        written = 0.0 if summaries is None or math.isnan(summaries) else summaries
        writes = 1 + written + 1  # running, summaries, failed
        reads = 1 + 1  # the worker's read, on_failure's read
    else:
        writes = 2 + bundles
        reads = 1
    amplify = 1 + max(read_regions, 0)
    parts = {
        "create": 1.0 * amplify,
        "writes": writes * amplify,
        "worker_reads": float(reads),
        "run_record": 1.0 * amplify,
        "polls": float(polls),
    }
    parts["total"] = sum(parts.values())
    return parts


def executions_per_generation(
    steps: float, retries: float = 0.0, *, failed: bool = False, worst_case: bool = True
) -> float:
    """Inngest executions of one generation: 1 run + its steps (+ every retried attempt
    when ``worst_case``: whether retries are billed is not documented). A failed run
    also starts the ``on_failure`` run and its one step."""
    total = 1 + steps + (retries if worst_case else 0.0)
    return total + (2 if failed else 0)


def estimates(frame: pd.DataFrame, poll_interval: float, read_regions: int) -> pd.DataFrame:
    """Per generation: polls, Redis commands (and their parts), Inngest executions."""
    out = frame.copy()
    failed = out["status"].eq("failed")
    out["polls"] = [polls_per_generation(d, poll_interval) for d in out["duration_s"]]
    parts = [
        redis_commands_per_generation(
            0.0 if math.isnan(b) else b,
            p,
            failed=bool(f),
            summaries=s,
            read_regions=read_regions,
        )
        for b, p, f, s in zip(out["bundles"], out["polls"], failed, out["summaries"], strict=True)
    ]
    for key in ("create", "writes", "worker_reads", "run_record", "polls", "total"):
        out[f"redis_{key}"] = [p[key] for p in parts]
    steps = out["steps"].fillna(0.0)
    out["executions_min"] = [
        executions_per_generation(s, 0, failed=bool(f), worst_case=False)
        for s, f in zip(steps, failed, strict=True)
    ]
    out["executions_worst"] = [
        executions_per_generation(s, r, failed=bool(f))
        for s, r, f in zip(steps, out["retries"].fillna(0.0), failed, strict=True)
    ]
    return out


# --------------------------------------------------------------------------- periods


def parse_period_end(period_end: str | date | datetime | None) -> datetime:
    """The period's end: now, or a date (its end, UTC) or an ISO timestamp."""
    if period_end is None:
        return datetime.now(UTC)
    if isinstance(period_end, datetime):
        return period_end if period_end.tzinfo else period_end.replace(tzinfo=UTC)
    if isinstance(period_end, date):
        return datetime.combine(period_end, datetime.min.time(), UTC) + timedelta(days=1)
    try:
        if len(period_end) == 10:
            return parse_period_end(date.fromisoformat(period_end))
        return parse_period_end(datetime.fromisoformat(period_end))
    except ValueError:
        raise UsageError(
            f"period_end {period_end!r} is not a date (YYYY-MM-DD) or ISO timestamp."
        ) from None


def in_period(frame: pd.DataFrame, period_days: float, end: datetime) -> pd.DataFrame:
    """The generations queued (or, lacking that, ended) in ``(end - period_days, end]``."""
    at = frame["queued_at"].fillna(frame["completed_at"]).fillna(frame["failed_at"])
    start = pd.Timestamp(end) - pd.Timedelta(days=period_days)
    return frame[(at > start) & (at <= pd.Timestamp(end))].reset_index(drop=True)


def observed_rate(frame: pd.DataFrame, period_days: float, end: datetime) -> float:
    """Generations per day over the span the data covers (at least 1 day, at most the
    period), so a few fresh generations do not read as a few per month."""
    if frame.empty:
        return 0.0
    first = frame["queued_at"].fillna(frame["failed_at"]).min()
    span = (pd.Timestamp(end) - first).total_seconds() / 86400 if not pd.isna(first) else 1.0
    return float(len(frame) / min(max(span, 1.0), period_days))


def peak_concurrency(frame: pd.DataFrame) -> int:
    """Most generations running at once (each runs one step at a time, so this is the
    concurrent steps they need)."""
    starts = frame["started_at"].fillna(frame["queued_at"])
    ends = frame["completed_at"].fillna(frame["failed_at"])
    events = sorted(
        [(s, 1) for s, e in zip(starts, ends, strict=True) if not (pd.isna(s) or pd.isna(e))]
        + [(e, -1) for s, e in zip(starts, ends, strict=True) if not (pd.isna(s) or pd.isna(e))],
        key=lambda item: (item[0], item[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def timing_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Time to first summary and duration (from the request): n, p50, p90, max (s)."""
    rows = {}
    for column, label in (
        ("time_to_first_summary_s", "time to first summary (s)"),
        ("duration_s", "duration (s)"),
    ):
        values = frame[column].dropna()
        rows[label] = {
            "n": len(values),
            "p50": values.quantile(0.5) if len(values) else math.nan,
            "p90": values.quantile(0.9) if len(values) else math.nan,
            "max": values.max() if len(values) else math.nan,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def commands_per_day(frame: pd.DataFrame, end: datetime, period_days: int) -> pd.DataFrame:
    """Estimated Redis commands and generations per UTC day of the period (zeros kept)."""
    last = pd.Timestamp(end).tz_convert("UTC")
    days = pd.date_range(
        end=(last - pd.Timedelta(microseconds=1)).normalize(), periods=period_days, freq="D"
    ).date
    at = frame["queued_at"].fillna(frame["failed_at"])
    grouped = (
        pd.DataFrame({"date": at.dt.date, "commands": frame["redis_total"], "generations": 1})
        .groupby("date")
        .sum()
        if not frame.empty
        else pd.DataFrame(columns=["commands", "generations"])
    )
    out = pd.DataFrame(index=pd.Index(days, name="date"))
    out["generations"] = grouped["generations"].reindex(out.index).fillna(0).astype(int)
    out["commands"] = grouped["commands"].reindex(out.index).fillna(0.0)
    return out


# --------------------------------------------------------------------------- tokens


def token_cost(
    model: str, prompt_tokens: float, completion_tokens: float, prices: Mapping[str, Any]
) -> float:
    """USD for the tokens at the model's list price (no cached-input discount: the run
    records do not say which tokens were cached); NaN for a model without a price."""
    price = prices.get(model)
    if not price or price.get("input") is None or price.get("output") is None:
        return math.nan
    return float(
        prompt_tokens / 1e6 * float(price["input"])
        + completion_tokens / 1e6 * float(price["output"])
    )


def tokens_by_model(
    frame: pd.DataFrame, prices: Mapping[str, Any]
) -> tuple[pd.DataFrame, list[str]]:
    """Calls, tokens and cost by model from the runs' usage entries, and notes (a model
    without a price gets cost NaN and a note)."""
    totals: dict[str, list[float]] = {}
    for raw in frame["usage_json"].dropna():
        for entry in json.loads(raw):
            row = totals.setdefault(str(entry.get("model")), [0.0, 0.0, 0.0])
            row[0] += 1
            row[1] += float(entry.get("promptTokens") or 0)
            row[2] += float(entry.get("completionTokens") or 0)
    table = pd.DataFrame(
        [
            {
                "model": model,
                "calls": calls,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_usd": token_cost(model, prompt, completion, prices),
            }
            for model, (calls, prompt, completion) in sorted(totals.items())
        ],
        columns=["model", "calls", "prompt_tokens", "completion_tokens", "cost_usd"],
    )
    notes = [
        f"No price for model {model!r} in tripkit/data/plan_limits.json: its cost is left "
        "out (NaN)."
        for model in table.loc[table["cost_usd"].isna(), "model"]
    ]
    return table, notes


# --------------------------------------------------------------------------- projections


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
        return 2 + self.bundles  # plan, one per bundle, finalize

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
    bounds = []
    if (runs := plan.value("inngest_runs_per_month")) is not None:
        bounds.append(runs / DAYS_PER_MONTH)
    if (steps := plan.value("inngest_steps_per_month")) is not None:
        bounds.append(steps / DAYS_PER_MONTH / (per.steps + per.retries))
    if (execs := plan.value("inngest_executions_per_month")) is not None:
        bounds.append(execs / DAYS_PER_MONTH / per.executions())
    inngest_bound = min(bounds) if bounds else math.inf
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
