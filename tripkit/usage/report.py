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
    free_tier_fit,
    mode_comparison,
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
    def _usage(self, p: Plan, per: PerGeneration | None = None) -> pd.DataFrame:
        """:func:`monthly_usage` for one profile at the report's volume and polling."""
        peak = peak_concurrency(self.generations) if not self.empty else 0
        return monthly_usage(
            p,
            per or self.per,
            self.generations_per_day,
            self.poll_interval,
            read_regions=self.read_regions,
            ttl_s=self.ttl_s,
            peak_concurrent=peak,
        )

    def verdict(self) -> Markdown:
        """The answer a manager reads first: does the usage fit the free tiers, which
        limit binds first, and when it would be reached at the current rate."""
        usage = self._usage(self.plan)
        volume, concurrency = _split_concurrency(usage)
        rate = f"{number(self.generations_per_day, 1 if self.generations_per_day < 100 else 0)} "
        rate += "generations a day"
        polling = f"polling every {self.poll_interval:g} s"
        lines = ["## Verdict", ""]
        if self.generations_per_day <= 0 or volume.empty:
            fit = free_tier_fit(self.plan, self.per, self.poll_interval, self.read_regions)
            redis = fit["redis_bound_per_day"] <= fit["inngest_bound_per_day"]
            lines += [
                "**No generations to measure against the free tiers** (none in the period, "
                "and no `generations_per_day` given).",
                "",
                f"- **Capacity:** at the setup guide's typical generation, {polling}, the "
                f"free tiers carry about {number(fit['fits_per_day'])} generations a day "
                f"(the {'Redis' if redis else 'Inngest'} limit binds first).",
            ]
            return Markdown("\n".join(lines))
        first = volume.loc[volume["used_pct"].idxmax()]
        over = volume[volume["used_pct"] > 100]
        if over.empty:
            lines.append(
                f"**Yes: the usage fits the free tiers.** At {rate} ({self.volume_basis}), "
                f"{polling}, a month uses at most {_pct(first['used_pct'])} of any limit of the "
                f"free tiers (profile `{self.plan.name}`)."
            )
        else:
            lines.append(
                f"**No: the usage does not fit the free tiers.** At {rate} "
                f"({self.volume_basis}), {polling}, {len(over)} of the free tiers' limits "
                f"(profile `{self.plan.name}`) would be exceeded."
            )
        lines += [
            "",
            f"- **Binds first:** {_what(first)}: {_amount(first, 'projected')} of "
            f"{_amount(first, 'limit')} ({_pct(first['used_pct'])}).",
            f"- **When:** {self._when(first)}",
        ]
        if self.per.duration_s < TYPICAL_DURATION_S / 2:  # the offline stack's fast model
            typical = replace(self.per, duration_s=TYPICAL_DURATION_S)
            t_volume, _ = _split_concurrency(self._usage(self.plan, typical))
            t_first = t_volume.loc[t_volume["used_pct"].idxmax()]
            lines.append(
                f"- **At a realistic length:** the observed generations took "
                f"{self.per.duration_s:,.0f} s; at the setup guide's typical "
                f"{TYPICAL_DURATION_S / 60:.0f} minutes (more polls each), {_what(t_first)} "
                f"binds first: {_pct(t_first['used_pct'])} of it at this volume, "
                f"{self._capacity(t_first)}."
            )
        for _, row in concurrency.iterrows():
            if row["projected"] > 0:
                lines.append(
                    f"- **Concurrency:** a peak of {number(row['projected'])} steps at once, "
                    f"of {number(row['limit'])} allowed ({_pct(row['used_pct'])}); more at "
                    "once wait in Inngest's queue, they do not fail."
                )
        if not math.isnan(self.per.usd_openai):
            monthly = self.per.usd_openai * self.generations_per_day * DAYS_PER_MONTH
            lines.append(
                f"- **OpenAI** has no free tier: about {usd(monthly)} a month at this rate "
                f"({usd(self.per.usd_openai)} a generation)."
            )
        for other in self.plans:
            if other is self.plan:
                continue
            o_volume, _ = _split_concurrency(self._usage(other))
            if o_volume.empty:
                continue
            o_first = o_volume.loc[o_volume["used_pct"].idxmax()]
            fits = "fits" if o_first["used_pct"] <= 100 else "does not fit"
            lines.append(
                f"- **Under profile `{other.name}`:** {fits}; {_what(o_first)} binds first "
                f"({_pct(o_first['used_pct'])})."
            )
        return Markdown("\n".join(lines))

    def _capacity(self, row: pd.Series) -> str:
        """The volume at which ``row``'s limit is reached, against today's."""
        if row["used_pct"] <= 0:
            return "whatever the volume"
        times = 100 / float(row["used_pct"])
        volume = number(self.generations_per_day * times)
        if times < 1:
            return f"the limit carries only about {volume} generations a day"
        return (
            f"reached at about {volume} generations a day "
            f"({number(times, 1 if times < 100 else 0)} times today's volume)"
        )

    def _when(self, row: pd.Series) -> str:
        """When ``row``'s limit would be reached at the current rate, in plain words."""
        used = float(row["used_pct"])
        item = str(row["item"])
        if "per day" in item or "per month" in item:
            period, days = ("day", 1.0) if "per day" in item else ("month", float(DAYS_PER_MONTH))
            if used <= 100:
                return (
                    f"not at this rate: a {period} uses {_pct(used)} of it. It would be "
                    f"{self._capacity(row)}."
                )
            reached = days * 100 / used  # days into the period
            if period == "day":
                at = datetime(2000, 1, 1) + timedelta(days=reached)
                return f"every day, at about {at:%H:%M} UTC at this rate."
            start = (self.end.replace(day=1) + timedelta(days=32)).replace(day=1)
            day = start + timedelta(days=math.ceil(reached) - 1)
            return (
                f"on day {math.ceil(reached)} of each month at this rate: in "
                f"{start:%B %Y}, on {day:%Y-%m-%d}."
            )
        if used <= 100:
            return f"not at this rate (it holds steady at {_pct(used)}); {self._capacity(row)}."
        return "already, at this rate."

    def header(self) -> Markdown:
        start = self.end - timedelta(days=self.period_days)
        n = len(self.generations)
        lines = [
            "## What this report covers",
            "",
            f"**Period:** {start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC "
            f"({self.period_days} days)  ",
            f"**Plan profile:** `{self.plan.name}`, {self.plan.label}; "
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
            cancelled = int(self.generations["status"].eq("cancelled").sum())
            lines.append(
                f"**{n} generations in the period** ({failed} failed, {cancelled} cancelled); "
                f"projections at {self.generations_per_day:,.1f} generations/day "
                f"({self.volume_basis})."
            )
        return Markdown("\n".join(lines))

    def notes(self) -> Markdown:
        per = self.per
        items = [
            "Redis commands per generation = create 1 + writes (running 1 + one per bundle "
            "summary + complete 1), each with its PUBLISH, + run record 1 + polls (the "
            "worker reads the session only to mark a failed run failed); polls = "
            "ceil(duration / poll interval) + 1. The polls dominate: poll less often (or stop "
            "polling when the tab is hidden) before anything else.",
            "Run records do not say how often each client polled: polls are estimated from "
            f"the duration at the assumed interval ({self.poll_interval:g} s). Upstash's stats "
            "(upstash_stats_json) give the measured count.",
            "Inngest: whether retried attempts count as extra executions is not documented; "
            "this report budgets for the worst case and counts every retried step attempt "
            f"(observed {per.retries:.2f} retries per generation). A failed run also starts "
            "the on_failure run (1 run + 1 step). A generation is 1 run + 1 step per "
            "bundle.",
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
            "cancelled": int(g["status"].eq("cancelled").sum()),
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
                for k in (
                    "create",
                    "writes",
                    "publishes",
                    "worker_reads",
                    "run_record",
                    "polls",
                    "total",
                )
            }
            basis = f"mean of {len(g)}"
        total = parts["total"]
        labels = {
            "create": "create the session (SET NX)",
            "writes": "session writes (SET XX: running, summaries, complete/fail)",
            "publishes": "announcements to push clients (PUBLISH, one per write)",
            "worker_reads": "worker reads (GET; only a failed run's)",
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
                "limit": [_what(row) for _, row in table.iterrows()],
                "projected": [_amount(row, "projected") for _, row in table.iterrows()],
                "free-tier limit": [_amount(row, "limit") for _, row in table.iterrows()],
                "share used": [_pct(u) for u in table["used_pct"]],
                "fits": ["yes" if s == "ok" else "NO: over" for s in table["status"]],
            }
        )
        return Table(out.set_index(["profile", "limit"]))

    def timing(self) -> Table | Markdown:
        if self.empty:
            return Markdown("No generations in the period.")
        table = timing_stats(self._completed()).round(1)
        table = table.rename(
            index={
                "time to first summary (s)": "request to first summary",
                "duration (s)": "request to the end",
            },
            columns={
                "n": "generations",
                "p50": "median (s)",
                "p90": "90th percentile (s)",
                "max": "slowest (s)",
            },
        )
        table.index.name = "seconds"
        table["generations"] = table["generations"].map(number)
        return Table(table)

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
        return Table(
            out.rename(
                columns={
                    "calls": "model calls",
                    "prompt_tokens": "input tokens",
                    "completion_tokens": "output tokens",
                    "cost_usd": "cost (list price)",
                }
            )
        )

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

    def poll_vs_push(self) -> Table:
        """Poll and push side by side at the original app's workload (5 bundles, ~6
        minutes, one client, polling every 2 s): what each costs per generation and the
        generations a month that fit each profile's free tier, Redis and Inngest together.
        The push figures rest on ``tripkit.usage.costs``' named push constants."""
        rows = mode_comparison(self.plans)
        table = pd.DataFrame(
            {
                "profile": [r.profile for r in rows],
                "mode": [r.mode for r in rows],
                "Redis commands / generation": [
                    number(r.redis_commands_per_generation) for r in rows
                ],
                "Inngest executions / generation": [
                    number(r.executions_per_generation) for r in rows
                ],
                "Redis allows / month": [number(r.redis_bound_per_month) for r in rows],
                "Inngest allows / month": [number(r.inngest_bound_per_month) for r in rows],
                "generations / month that fit": [number(r.fits_per_month) for r in rows],
                "bound by": [r.bound_by for r in rows],
            }
        )
        return Table(table.set_index(["profile", "mode"]))

    def projected_cost(self) -> Table:
        table = self._each_plan(projected_monthly_cost)
        for column in ("monthly", "free", "beyond_free"):
            table[column] = [
                number(v, 2 if "GB" in item else 0)
                for v, item in zip(table[column], table["item"], strict=True)
            ]
        table.loc[table["service"].eq("OpenAI"), ["monthly", "free", "beyond_free"]] = "-"
        table["cost_usd"] = table["cost_usd"].map(usd)
        table = table.rename(
            columns={
                "item": "what",
                "monthly": "used a month",
                "free": "free a month",
                "beyond_free": "past the free allowance",
                "cost_usd": "cost a month",
                "note": "how it is priced",
            }
        )
        return Table(table.set_index(["profile", "service", "what"]))

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
        """Estimated (and measured) commands per day, on a linear scale; the free tiers'
        daily allowances are drawn when they fit the scale, else named in a note (a log
        scale would make one busy day look like the limit)."""
        daily = commands_per_day(self.generations, self.end, self.period_days)
        fig = figure()
        ax = fig.add_subplot()
        days = [f"{day:%b %d}" for day in daily.index]  # one bar a day, named by its date
        bars = ax.bar(days, daily["commands"], color="#4c78a8", label="estimated (run records)")
        ax.bar_label(bars, [number(v) if v else "" for v in daily["commands"]], fontsize=9)
        top = float(daily["commands"].max() or 0)
        if self.upstash is not None and not self.upstash.daily.empty:
            measured = self.upstash.daily.set_index("date")["commands"].reindex(daily.index)
            ax.plot(days, measured, "o", color="#f58518", label="measured (Upstash stats)")
            top = max(top, float(measured.max() if measured.notna().any() else 0))
        styles = iter(["--", ":", "-."])
        far = []
        for p in self.plans:
            limit = p.redis_commands_per_day
            if not limit:
                continue
            kind = "a day" if p.value("redis_commands_per_day") else "a month / 30"
            if top and limit > 4 * top:
                far.append(f"{p.name} {limit:,.0f} ({kind})")
                continue
            ax.axhline(
                limit, linestyle=next(styles), color="#e45756", label=f"{p.name}: {limit:,.0f}"
            )
        if far:
            ax.text(
                0.01,
                0.97,
                "Free allowance per day, far above this scale: " + "; ".join(far),
                transform=ax.transAxes,
                va="top",
                fontsize=10,
                color="#a1282e",
            )
        ax.set_ylim(bottom=0, top=(top or 1) * 1.25)
        ax.set_ylabel("Redis commands a day")
        ax.set_title(f"Redis commands per day (polling every {self.poll_interval:g} s)")
        ax.legend(loc="upper right")
        ticks = list(range(len(days) - 1, -1, -max(1, len(days) // 10)))[::-1]  # the last day
        ax.set_xticks(ticks, [days[i] for i in ticks])
        return Chart(fig)

    def plot_durations(self) -> Chart | Markdown:
        from matplotlib.ticker import MaxNLocator

        if self.empty:
            return Markdown("No generations in the period.")
        fig = figure()
        ax = fig.add_subplot()
        g = self._completed()
        both = pd.concat([g["time_to_first_summary_s"], g["duration_s"]]).dropna()
        if both.empty:
            return Markdown("No timings recorded.")
        low, high, bins = float(both.min()), float(both.max()), min(30, 4 * len(g) + 4)
        edges = [low + i * (high - low or 1.0) / bins for i in range(bins + 1)]
        for column, label, color in (
            ("time_to_first_summary_s", "time to first summary", "#72b7b2"),
            ("duration_s", "request to the end", "#4c78a8"),
        ):
            values = g[column].dropna()
            if len(values):
                ax.hist(values, bins=edges, alpha=0.8, label=label, color=color)
        ax.set_xlabel("seconds from the request")
        ax.set_ylabel("generations")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"Timing of the {len(g)} completed generations")
        ax.legend()
        return Chart(fig)

    def plot_tokens(self) -> Chart | Markdown:
        table = self._tokens()
        if isinstance(table, Markdown):
            return table
        fig = figure()
        ax = fig.add_subplot()
        fig.set_figheight(1.6 + 0.6 * len(table))
        ax.barh(table["model"], table["prompt_tokens"], color="#4c78a8", label="input")
        ax.barh(
            table["model"],
            table["completion_tokens"],
            left=table["prompt_tokens"],
            color="#f58518",
            label="output",
        )
        for y, (total, cost) in enumerate(
            zip(table["prompt_tokens"] + table["completion_tokens"], table["cost_usd"], strict=True)
        ):
            ax.text(total, y, f"  {usd(cost)}", va="center")
        ax.set_xlim(right=float((table["prompt_tokens"] + table["completion_tokens"]).max()) * 1.2)
        ax.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
        ax.set_xlabel("tokens in the period")
        ax.set_title("OpenAI tokens and cost by model")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return Chart(fig)


# --------------------------------------------------------------------------- helpers


def _profile_order(plans: Sequence[Plan]) -> Any:
    """A sort key keeping the profiles in report order (the chosen one first)."""
    order = {p.name: i for i, p in enumerate(plans)}

    def key(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "profile" else column

    return key


def _split_concurrency(usage: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The limits a volume uses up (per day, per month, storage), and the concurrency
    limits, which depend on the peak, not the volume."""
    at_once = usage["item"].str.contains("concurrent")
    return usage[~at_once & usage["limit"].notna()], usage[at_once & usage["limit"].notna()]


def _what(row: pd.Series) -> str:
    """A usage row's limit, named as the reader knows it ("Inngest executions per month")."""
    return str(row["item"]).replace(" (bytes, steady state)", "").replace(" (bytes)", "")


def _amount(row: pd.Series, column: str) -> str:
    value = row[column]
    return size(value) if "bytes" in str(row["item"]) else number(value)


def _pct(value: float) -> str:
    """A share in words a reader trusts: under 0.1 % is not "0.0 %"."""
    if 0 < value < 0.1:
        return "under 0.1%"
    return f"{value:,.1f}%" if value < 10 else f"{value:,.0f}%"


def _limit_text(entry: Mapping[str, Any]) -> str:
    value, unit = float(entry["value"]), str(entry["unit"])
    if unit.startswith("bytes"):
        return f"{size(value)}{unit.removeprefix('bytes')}"
    return f"{number(value, 2 if value < 1 else 0)} {unit}"
