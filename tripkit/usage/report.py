"""The usage report's content: what ``notebooks/03_usage_report.ipynb`` shows, one method
a cell.

A :class:`UsageReport` holds a period's generations with their estimates and the plans;
each method returns one table, chart or note, rendered for Jupyter (and so for the
code-free HTML ``tripkit report`` writes) by :mod:`tripkit.usage.render`.
:func:`tripkit.usage.build.build_report` gathers the data and makes one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from tripkit.usage.costs import (
    commands_per_day,
    peak_concurrency,
    redis_commands_per_generation,
    timing_stats,
    tokens_by_model,
)
from tripkit.usage.history import Harvest, UpstashStats
from tripkit.usage.plans import DAYS_PER_MONTH, Plan
from tripkit.usage.projections import (
    POLL_INTERVALS,
    TYPICAL_DURATION_S,
    PerGeneration,
    fit_table,
    monthly_usage,
    projected_monthly_cost,
    storage_bytes,
)
from tripkit.usage.render import Chart, Markdown, Table, figure, number, size, usd

__all__ = ["UsageReport"]


@dataclass
class UsageReport:
    """Everything the usage notebook shows; each method returns one table, chart or text."""

    period_days: int
    end: datetime
    plan: Plan
    plans: list[Plan]
    poll_interval: float
    read_regions: int
    data_source: str
    generations: pd.DataFrame  # the period's generations, with the per-run estimates
    per: PerGeneration
    generations_per_day: float
    volume_basis: str
    ttl_s: float
    prices: dict[str, dict[str, Any]]
    harvest: Harvest | None = None
    upstash: UpstashStats | None = None
    inngest_runs: pd.DataFrame | None = None
    extra_notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return bool(self.generations.empty)

    def _completed(self) -> pd.DataFrame:
        """Timing is about generations that ran to the end (a refused key fails in 0.3 s)."""
        return self.generations[self.generations["status"].eq("completed")]

    def _each_plan(self, project: Callable[..., pd.DataFrame], **extra: Any) -> pd.DataFrame:
        """One projection (:func:`monthly_usage`, :func:`projected_monthly_cost`) for every
        profile, stacked, at the report's volume, polling, read regions and TTL."""
        return pd.concat(
            [
                project(
                    p,
                    self.per,
                    self.generations_per_day,
                    self.poll_interval,
                    read_regions=self.read_regions,
                    ttl_s=self.ttl_s,
                    **extra,
                )
                for p in self.plans
            ],
            ignore_index=True,
        )

    # -- text -----------------------------------------------------------------------
    def header(self) -> Markdown:
        start = self.end - timedelta(days=self.period_days)
        n = len(self.generations)
        lines = [
            f"**Period:** {start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC "
            f"({self.period_days} days)  ",
            f"**Plan profile:** `{self.plan.name}` ({self.plan.label}); "
            + ", ".join(f"`{p.name}`" for p in self.plans if p is not self.plan)
            + " shown beside it  ",
            f"**Polling assumed:** every {self.poll_interval:g} s; "
            f"**read regions:** {self.read_regions}  ",
            f"**Data:** {self.data_source}"
            + (
                f"; harvested {self.harvest.found} run records from Redis "
                f"({self.harvest.new} new) for {self.harvest.total_commands} commands "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.harvest.commands.items()))})"
                if self.harvest
                else ""
            ),
            "",
        ]
        if self.empty:
            lines.append(
                "**No generations in the period.** Projections below use the assumed "
                "typical generation."
            )
        else:
            failed = int(self.generations["status"].eq("failed").sum())
            lines.append(
                f"**{n} generations in the period** ({failed} failed); "
                f"projections at {self.generations_per_day:,.1f} generations/day "
                f"({self.volume_basis})."
            )
        return Markdown("\n".join(lines))

    def notes(self) -> Markdown:
        per = self.per
        items = [
            "Redis commands per generation = create 1 + writes (running 1 + one per bundle "
            "summary + complete 1) + worker read 1 + run record 1 + polls; polls = "
            "ceil(duration / poll interval) + 1. The polls dominate: poll less often (or stop "
            "polling when the tab is hidden) before anything else.",
            "Run records do not say how often each client polled: polls are estimated from "
            f"the duration at the assumed interval ({self.poll_interval:g} s). Upstash's stats "
            "(upstash_stats_json) give the measured count.",
            "Inngest: whether retried attempts count as extra executions is not documented; "
            "this report budgets for the worst case and counts every retried step attempt "
            f"(observed {per.retries:.2f} retries per generation). A failed run also starts "
            "the on_failure run (1 run + 1 step). The finalize step's retries are not "
            "recorded.",
            f"Projections: a {DAYS_PER_MONTH}-day month; per-generation means are "
            f"{per.basis}: {per.bundles:.1f} bundles, {per.duration_s:.0f} s, "
            f"{per.bytes_held():,.0f} bytes held per generation.",
            f"Storage: each generation's session and run record live {self.ttl_s:.0f} s (the "
            "TTL) after their last write; payload bytes only.",
            "OpenAI cost at list price, without cached-input discounts (the usage entries do "
            "not say which tokens were cached); prices from third-party copies of OpenAI's "
            "page (see the limits table's sources).",
            "Upstash: a global database bills each write again per read region "
            f"(read_regions={self.read_regions}); pay-as-you-go may bill all commands, not "
            "only those past the free allowance (our sources do not say).",
            "Harvesting run records costs commands too (SCAN + MGET). Run records expire with "
            "their sessions: harvest more often than the TTL (tripkit harvest, "
            "every 30 minutes) or the history misses generations.",
            "The guide's numbers are older free tiers; see tripkit/data/plan_limits.json for "
            "every number's source and date.",
            *self.extra_notes,
        ]
        return Markdown("\n".join(f"- {item}" for item in items))

    # -- tables ---------------------------------------------------------------------
    def limits_table(self) -> Table:
        """Each limit, profile by profile, side by side (with source and date)."""
        by_label: dict[str, dict[str, str]] = {}  # label -> profile -> key
        for p in self.plans:
            for key, entry in p.limits.items():
                by_label.setdefault(str(entry["label"]), {})[p.name] = key
        rows = []
        for label, found in by_label.items():
            row: dict[str, str] = {"limit": label}
            for p in self.plans:
                name = found.get(p.name)
                row[p.name] = _limit_text(p.limits[name]) if name else "-"
            for p in self.plans:
                name = found.get(p.name)
                row[f"source ({p.name})"] = p.cite(name) if name else "-"
            rows.append(row)
        return Table(pd.DataFrame(rows).set_index("limit"))

    def generations_summary(self) -> Table | Markdown:
        if self.empty:
            return Markdown("No generations in the period.")
        g = self.generations
        summary = {
            "generations": len(g),
            "completed": int(g["status"].eq("completed").sum()),
            "failed": int(g["status"].eq("failed").sum()),
            "bundles (mean)": g["bundles"].mean(),
            "Inngest steps (mean)": g["steps"].mean(),
            "retried step attempts (total)": g["retries"].sum(),
            "model calls (total)": g["model_calls"].sum(),
            "observed peak concurrency": peak_concurrency(g),
        }
        return Table(
            pd.DataFrame(
                {"value": [number(v, 0 if float(v).is_integer() else 1) for v in summary.values()]},
                index=pd.Index(list(summary)),
            )
        )

    def redis_per_generation(self) -> Table:
        """Where a generation's Redis commands go, and the polls' share of them."""
        if self.empty:
            parts = redis_commands_per_generation(
                self.per.bundles, self.per.polls(self.poll_interval), read_regions=self.read_regions
            )
            basis = "typical (assumed)"
        else:
            g = self.generations
            parts = {
                k: float(g[f"redis_{k}"].mean())
                for k in ("create", "writes", "worker_reads", "run_record", "polls", "total")
            }
            basis = f"mean of {len(g)}"
        total = parts["total"]
        labels = {
            "create": "create the session (SET NX)",
            "writes": "session writes (SET XX: running, summaries, complete/fail)",
            "worker_reads": "worker reads (GET)",
            "run_record": "run record (SET)",
            "polls": f"client polls (GET, every {self.poll_interval:g} s)",
            "total": "total",
        }
        return Table(
            pd.DataFrame(
                {
                    f"commands per generation ({basis})": [number(parts[k], 1) for k in labels],
                    "share": [f"{100 * parts[k] / total:.0f}%" for k in labels],
                },
                index=pd.Index(list(labels.values()), name="Redis commands"),
            )
        )

    def usage_vs_limits(self) -> Table:
        peak = peak_concurrency(self.generations) if not self.empty else 0
        table = self._each_plan(monthly_usage, peak_concurrent=peak)
        out = pd.DataFrame(
            {
                "profile": table["profile"],
                "item": table["item"],
                "projected": [
                    size(v) if "bytes" in i else number(v)
                    for v, i in zip(table["projected"], table["item"], strict=True)
                ],
                "limit": [
                    size(v) if "bytes" in i else number(v)
                    for v, i in zip(table["limit"], table["item"], strict=True)
                ],
                "used": [f"{u:,.1f}%" for u in table["used_pct"]],
                "status": table["status"],
            }
        )
        return Table(out.set_index(["profile", "item"]))

    def timing(self) -> Table | Markdown:
        if self.empty:
            return Markdown("No generations in the period.")
        return Table(timing_stats(self._completed()).round(1))

    def _tokens(self) -> pd.DataFrame | Markdown:
        """The period's tokens and cost by model, or a note saying why there are none."""
        if self.empty:
            return Markdown("No generations in the period.")
        table, _ = tokens_by_model(self.generations, self.prices)
        if table.empty:
            return Markdown("No token usage recorded.")
        return table

    def tokens_table(self) -> Table | Markdown:
        table = self._tokens()
        if isinstance(table, Markdown):
            return table
        table["cost per generation"] = table["cost_usd"] / len(self.generations)
        out = table.set_index("model")
        for column in ("calls", "prompt_tokens", "completion_tokens"):
            out[column] = out[column].map(number)
        for column in ("cost_usd", "cost per generation"):
            out[column] = out[column].map(usd)
        return Table(out)

    def free_tier_fit(self) -> Table:
        """By profile and poll interval; at the observed duration and, when that differs,
        at the setup guide's typical 6 minutes (the local stack's model is much faster)."""
        variants = [(f"{self.per.duration_s:.0f} s ({self.per.basis.split(' (')[0]})", self.per)]
        if abs(self.per.duration_s - TYPICAL_DURATION_S) > 1:
            typical = replace(self.per, duration_s=TYPICAL_DURATION_S)
            variants.append((f"{TYPICAL_DURATION_S:.0f} s (setup guide: 3-8 min)", typical))
        parts = []
        for label, per in variants:
            part = fit_table(self.plans, per, POLL_INTERVALS, self.read_regions)
            part.insert(1, "generation lasting", label)
            parts.append(part)
        table = pd.concat(parts, ignore_index=True).sort_values(
            ["profile", "generation lasting"], kind="stable", key=_profile_order(self.plans)
        )
        table = table.rename(
            columns={
                "poll_interval_s": "poll every (s)",
                "redis_commands_per_generation": "Redis commands / generation",
                "redis_bound_per_day": "Redis allows / day",
                "inngest_bound_per_day": "Inngest allows / day",
                "fits_per_day": "generations / day that fit",
                "bound_by": "bound by",
            }
        )
        table["Redis commands / generation"] = table["Redis commands / generation"].map(number)
        for column in ("Redis allows / day", "Inngest allows / day", "generations / day that fit"):
            table[column] = table[column].map(number)
        return Table(table.set_index(["profile", "generation lasting", "poll every (s)"]))

    def projected_cost(self) -> Table:
        table = self._each_plan(projected_monthly_cost)
        for column in ("monthly", "free", "beyond_free"):
            table[column] = [
                number(v, 2 if "GB" in item else 0)
                for v, item in zip(table[column], table["item"], strict=True)
            ]
        table.loc[table["service"].eq("OpenAI"), ["monthly", "free", "beyond_free"]] = "-"
        table["cost_usd"] = table["cost_usd"].map(usd)
        return Table(table.set_index(["profile", "service", "item"]))

    def measured(self) -> Markdown | Table:
        """What the services themselves counted, beside the estimates, when given."""
        if self.upstash is None and self.inngest_runs is None:
            return Markdown(
                "No service data given (upstash_stats_json, inngest_runs_json): the numbers "
                "above are estimated from the run records."
            )
        rows: dict[str, tuple[str, str]] = {}
        if self.upstash is not None:
            u = self.upstash
            # Only the days the stats cover (the last few), in the period.
            daily = commands_per_day(self.generations, self.end, self.period_days)
            covered = u.daily[u.daily["date"].isin(set(daily.index))]
            measured = float(covered["commands"].sum()) if not covered.empty else math.nan
            estimated = float(daily.loc[daily.index.isin(set(covered["date"])), "commands"].sum())
            rows[f"Redis commands on the {len(covered)} days the stats cover"] = (
                number(measured),
                number(estimated),
            )
            rows["Redis commands today (daily_net_commands)"] = (number(u.today_commands), "-")
            rows["Redis commands this month (total_monthly_requests)"] = (
                number(u.month_commands),
                "-",
            )
            rows["Upstash billing this month (total_monthly_billing)"] = (
                usd(u.month_billing_usd),
                "-",
            )
            rows["Redis storage now (current_storage)"] = (
                size(u.current_storage_bytes),
                size(storage_bytes(self.per, self.generations_per_day, self.ttl_s)),
            )
        if self.inngest_runs is not None:
            runs = self.inngest_runs
            estimated_min = self.generations["executions_min"].sum() if not self.empty else 0
            estimated_worst = self.generations["executions_worst"].sum() if not self.empty else 0
            failed = int(self.generations["status"].eq("failed").sum()) if not self.empty else 0
            rows["Inngest runs (on_failure runs included)"] = (
                number(len(runs)),
                number(len(self.generations) + failed),
            )
            rows["Inngest executions (runs + steps)"] = (
                number(runs["executions_min"].sum(min_count=1)),
                number(estimated_min),
            )
            rows["Inngest executions, every attempt counted"] = (
                number(runs["executions_worst"].sum(min_count=1)),
                number(estimated_worst),
            )
        return Table(
            pd.DataFrame(
                {
                    "measured": [v[0] for v in rows.values()],
                    "estimated": [v[1] for v in rows.values()],
                },
                index=pd.Index(list(rows), name="measured by the services"),
            )
        )

    # -- charts ---------------------------------------------------------------------
    def plot_commands_per_day(self) -> Chart:
        daily = commands_per_day(self.generations, self.end, self.period_days)
        fig = figure()
        ax = fig.add_subplot()
        ax.bar(daily.index, daily["commands"], color="#4c78a8", label="estimated (run records)")
        if self.upstash is not None and not self.upstash.daily.empty:
            measured = self.upstash.daily.set_index("date")["commands"].reindex(daily.index)
            ax.plot(daily.index, measured, "o", color="#f58518", label="measured (Upstash stats)")
        styles = iter(["--", ":", "-."])
        for p in self.plans:
            limit = p.redis_commands_per_day
            if limit:
                kind = "daily" if p.value("redis_commands_per_day") else "monthly / 30"
                ax.axhline(
                    limit,
                    linestyle=next(styles),
                    color="#e45756",
                    label=f"{p.name}: {limit:,.0f} ({kind})",
                )
        ax.set_yscale("log")
        ax.set_ylim(bottom=1)
        ax.set_ylabel("Redis commands / day (log)")
        ax.set_title(f"Redis commands per day (polling every {self.poll_interval:g} s)")
        ax.legend(fontsize=8, loc="upper left")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        return Chart(fig)

    def plot_durations(self) -> Chart | Markdown:
        if self.empty:
            return Markdown("No generations in the period.")
        fig = figure()
        ax = fig.add_subplot()
        g = self._completed()
        both = pd.concat([g["time_to_first_summary_s"], g["duration_s"]]).dropna()
        if both.empty:
            return Markdown("No timings recorded.")
        low, high, bins = float(both.min()), float(both.max()), 30
        edges = [low + i * (high - low or 1.0) / bins for i in range(bins + 1)]
        for column, label, color in (
            ("time_to_first_summary_s", "time to first summary", "#72b7b2"),
            ("duration_s", "duration", "#4c78a8"),
        ):
            values = g[column].dropna()
            if len(values):
                ax.hist(values, bins=edges, alpha=0.8, label=label, color=color)
        ax.set_xlabel("seconds from the request")
        ax.set_ylabel("generations")
        ax.set_title(f"Timing of the {len(g)} completed generations")
        ax.legend(fontsize=8)
        return Chart(fig)

    def plot_tokens(self) -> Chart | Markdown:
        table = self._tokens()
        if isinstance(table, Markdown):
            return table
        fig = figure()
        ax = fig.add_subplot()
        ax.barh(table["model"], table["prompt_tokens"], color="#4c78a8", label="prompt")
        ax.barh(
            table["model"],
            table["completion_tokens"],
            left=table["prompt_tokens"],
            color="#f58518",
            label="completion",
        )
        for y, (total, cost) in enumerate(
            zip(table["prompt_tokens"] + table["completion_tokens"], table["cost_usd"], strict=True)
        ):
            ax.text(total, y, f"  {usd(cost)}", va="center", fontsize=8)
        ax.set_xlim(right=float((table["prompt_tokens"] + table["completion_tokens"]).max()) * 1.2)
        ax.set_xlabel("tokens in the period")
        ax.set_title("OpenAI tokens and cost by model")
        ax.legend(fontsize=8, loc="lower right")
        return Chart(fig)


# --------------------------------------------------------------------------- helpers


def _profile_order(plans: Sequence[Plan]) -> Any:
    """A sort key keeping the profiles in report order (the chosen one first)."""
    order = {p.name: i for i, p in enumerate(plans)}

    def key(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "profile" else column

    return key


def _limit_text(entry: Mapping[str, Any]) -> str:
    value, unit = float(entry["value"]), str(entry["unit"])
    if unit.startswith("bytes"):
        return f"{size(value)}{unit.removeprefix('bytes')}"
    return f"{number(value, 2 if value < 1 else 0)} {unit}"
