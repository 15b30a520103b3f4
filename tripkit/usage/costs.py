"""What the generations cost: Redis commands, Inngest executions and tokens, per
generation and per period, from what they actually did.

Upstash bills every Redis command, Inngest every run and step, OpenAI every token. The
functions here are pure: the run records come as a table from
:mod:`tripkit.usage.history`; :mod:`tripkit.usage.projections` takes these numbers to a
month against each plan, and :mod:`tripkit.usage.report` shows both.

The Redis cost of one generation (:func:`redis_commands_per_generation`, asserted against
a real run in the tests): create 1 + writes (running 1, one per bundle summary,
complete 1), each a check-and-set script billed as 2 (the ``EVAL`` and its ``SET``, see
:mod:`tripkit.store`) and followed by a PUBLISH, + the run record 1 + the client's polls.
The worker reads nothing (its start event carries what the queued session was made of),
except ``on_failure``, which reads the session it marks failed. The polls dominate: a
6-minute generation polled every 2 s is ~181 GETs against 23 other commands (5
bundles). :func:`redis_commands_by_mode` prices the same generation for a client that
polls and for one that follows the push endpoint instead; the push figures rest on the
named constants below.

The Inngest cost (:func:`executions_per_generation`): one run plus one step per bundle
(:func:`steps_per_generation`), so bundles + 1 executions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal

import pandas as pd

from tripkit.usage.plans import UsageError

__all__ = [
    "COMMANDS_PER_PUSH_CLIENT",
    "PUBLISHES_PER_SESSION_WRITE",
    "Mode",
    "commands_per_day",
    "estimates",
    "executions_per_generation",
    "in_period",
    "observed_rate",
    "parse_period_end",
    "peak_concurrency",
    "polls_per_generation",
    "redis_commands_by_mode",
    "redis_commands_per_generation",
    "session_writes",
    "steps_per_generation",
    "timing_stats",
    "token_cost",
    "tokens_by_model",
]

#: How a client follows a generation: ``poll`` (GET the session every few seconds, the
#: original app's way) or ``push`` (one ``GET /api/session/{id}/events`` stream).
Mode = Literal["poll", "push"]

#: The store PUBLISHes once after each session write (running, each summary, complete or
#: failed) so push clients hear of it, in either mode: it cannot know whether anyone
#: follows by push. Not on create: nobody can follow a session before the POST returns.
PUBLISHES_PER_SESSION_WRITE: Final = 1.0
#: Push mode: Redis commands one client costs from connect to the final event, whatever
#: the generation's length: the replay read of the session (GET), plus the SUBSCRIBE
#: when it is its app process's only push client (the process shares one subscription
#: among all of them). Deliveries to a subscriber are not billed (push.md). Measured:
#: tests/test_push.py.
COMMANDS_PER_PUSH_CLIENT: Final = 2.0


# --------------------------------------------------------------------------- per generation


def steps_per_generation(bundles: float) -> float:
    """Inngest steps of a completed generation: one ``bundle-<i>`` step per bundle (the
    first also marks the session running, the last also completes it)."""
    return float(bundles)


def session_writes(bundles: float) -> float:
    """The worker's ``SET ... XX`` writes to a completed generation's session: running,
    one per bundle summary, complete."""
    return 2.0 + bundles


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
    each a ``SET`` inside a script (``write_scripts``, one ``EVAL`` each) followed by its
    PUBLISH (the store announces every write, polled or not), run record 1, polls; the
    worker reads nothing (``worker_reads`` 0: the first step rebuilds the queued session
    from its start event). Failed: the summaries written before the failure (default 0)
    and ``fail`` (on_failure's GET + a write) instead of the summaries and complete. A
    global database bills each write again per read region (``read_regions``).
    """
    if failed:
        written = 0.0 if summaries is None or math.isnan(summaries) else summaries
        writes = 1 + written + 1  # running, summaries, failed
        reads = 1  # on_failure's read
    else:
        writes = 2 + bundles
        reads = 0
    amplify = 1 + max(read_regions, 0)
    parts = {
        "create": 1.0 * amplify,
        "writes": writes * amplify,
        "write_scripts": float(writes),
        "publishes": PUBLISHES_PER_SESSION_WRITE * writes,
        "worker_reads": float(reads),
        "run_record": 1.0 * amplify,
        "polls": float(polls),
    }
    parts["total"] = sum(parts.values())
    return parts


def redis_commands_by_mode(
    mode: Mode,
    bundles: float,
    polls: float = 0.0,
    *,
    writes: float | None = None,
    clients: int = 1,
) -> dict[str, float]:
    """Billed Redis commands of one completed generation followed by ``clients`` clients in
    ``mode``, by source: the generation's own (create, its ``writes``, default
    :func:`session_writes`, each a script with its ``SET`` and its PUBLISH, the run
    record; the worker reads nothing), then
    ``polls`` GETs per client, or :data:`COMMANDS_PER_PUSH_CLIENT` per push client."""
    if mode not in ("poll", "push"):
        raise UsageError(f"Unknown mode {mode!r}: use 'poll' or 'push'.")
    if clients < 0 or polls < 0:
        raise UsageError("clients and polls cannot be negative.")
    writes = session_writes(bundles) if writes is None else writes
    parts = {
        "create": 1.0,
        "worker_reads": 0.0,
        "writes": float(writes),
        "write_scripts": float(writes),
        "publishes": PUBLISHES_PER_SESSION_WRITE * writes,
        "run_record": 1.0,
    }
    if mode == "poll":
        parts["polls"] = float(polls) * clients
    else:
        parts["push_clients"] = COMMANDS_PER_PUSH_CLIENT * clients
    parts["total"] = sum(parts.values())
    return parts


def executions_per_generation(
    steps: float, retries: float = 0.0, *, failed: bool = False, worst_case: bool = True
) -> float:
    """Inngest executions of one generation: 1 run + its steps (one per bundle since
    each bundle became one step; older runs also had ``plan`` and ``finalize``), + every
    retried attempt when ``worst_case`` (whether retries are billed is not documented).
    A failed run also starts the ``on_failure`` run and its one step."""
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
    keys = ("create", "writes", "write_scripts", "publishes", "worker_reads", "run_record")
    for key in (*keys, "polls", "total"):
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
    at = (
        frame["queued_at"]
        .fillna(frame["completed_at"])
        .fillna(frame["failed_at"])
        .fillna(frame["cancelled_at"])
    )
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
    ends = frame["completed_at"].fillna(frame["failed_at"]).fillna(frame["cancelled_at"])
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
