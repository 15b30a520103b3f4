"""What the generations cost, against the plans' free tiers (the usage report's engine).

Upstash bills every Redis command, Inngest every run and step, OpenAI every token; the
setup guide promises all of it fits the free tiers. This module puts numbers on that,
from what the generations actually did, and is what ``notebooks/03_usage_report.ipynb``
calls (one or two lines per cell). Functions are pure apart from the marked I/O.

Where the data comes from:

- **Run records**: the worker writes one JSON record per run to
  ``<prefix>:run:<sessionId>`` (timings, bundles, steps, attempts, token usage; see
  :mod:`tripkit.worker`). It has the session's TTL (1 h by default), so it lives in
  Redis only as long as the session. The report therefore *harvests* the records
  (:func:`collect_run_records`: SCAN + MGET, a few commands) into a CSV
  (:func:`harvest`, deduplicated by session id). Scheduled harvests are how the
  history outlives the TTL: ``tripkit harvest`` every 30 minutes (a
  few commands) and ``tripkit report`` daily miss nothing (see ``reports/README.md``).
- **Inngest's runs API** (``GET /v1/events/{id}/runs``, ``GET /v1/runs/{id}``, which
  tripkit's local executor speaks too): runs and, where given, steps and attempts.
- **Upstash's stats API** (``GET /v2/redis/stats/{id}``): the commands Upstash counted.

Plan limits and prices are data, each number with its source and date
(``tripkit/data/plan_limits.json``); a report picks a profile (``guide``: the setup
guide's older free tiers, ``current``: the newest found) and shows the others beside it.

The Redis cost of one generation (:func:`redis_commands_per_generation`, asserted against
a real run in the tests): create 1 + writes (running 1, one per bundle summary,
complete 1) + the worker's read 1 + the run record 1 + the client's polls. The polls
dominate: a 6-minute generation polled every 2 s is ~181 GETs against 8 other commands.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tripkit import keys
from tripkit.errors import TripkitError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tripkit.transport import Transport

__all__ = [
    "POLL_INTERVALS",
    "Chart",
    "Harvest",
    "Markdown",
    "PerGeneration",
    "Plan",
    "UpstashStats",
    "UsageError",
    "UsageReport",
    "build_report",
    "collect_run_records",
    "executions_per_generation",
    "free_tier_fit",
    "generations_table",
    "harvest",
    "harvest_from_redis",
    "inngest_runs_table",
    "load_plans",
    "monthly_usage",
    "plan",
    "polls_per_generation",
    "projected_monthly_cost",
    "read_history",
    "redis_commands_per_generation",
    "report_parameters",
    "timing_stats",
    "token_cost",
    "tokens_by_model",
    "upstash_stats",
]

#: Poll intervals (s) of the "what fits the free tier" table.
POLL_INTERVALS = (1.0, 2.0, 5.0, 10.0)
DAYS_PER_MONTH = 30
#: A typical generation when none were observed: the setup guide's "3-8 minutes" and
#: "~180 requests" at 2 s (so 6 minutes), the app's default 3 bundles, and document sizes
#: measured on the local stack's demo (3 bundles).
TYPICAL_DURATION_S = 360.0
TYPICAL_BUNDLES = 3.0
TYPICAL_SESSION_BYTES = 4500.0
TYPICAL_RECORD_BYTES = 800.0

#: The history CSV's columns, in order (a tidy table: one row per generation).
COLUMNS = [
    "session_id",
    "run_id",
    "status",
    "error",
    "queued_at",
    "started_at",
    "first_summary_at",
    "completed_at",
    "failed_at",
    "time_to_first_summary_s",
    "duration_s",
    "bundles",
    "summaries",
    "steps",
    "model_calls",
    "attempts_total",
    "retries",
    "prompt_tokens",
    "completion_tokens",
    "models",
    "usage_json",
    "record_bytes",
    "session_bytes",
    "harvested_at",
]
_TIMES = ["queued_at", "started_at", "first_summary_at", "completed_at", "failed_at"]
_NUMBERS = [
    "time_to_first_summary_s",
    "duration_s",
    "bundles",
    "summaries",
    "steps",
    "model_calls",
    "attempts_total",
    "retries",
    "prompt_tokens",
    "completion_tokens",
    "record_bytes",
    "session_bytes",
]


class UsageError(TripkitError):
    """A report input is wrong (unknown profile, missing file, bad value)."""


# --------------------------------------------------------------------------- plans


@cache
def _plans_text() -> str:
    return resources.files("tripkit").joinpath("data/plan_limits.json").read_text("utf-8")


def load_plans() -> dict[str, Any]:
    """The plan limits and prices shipped with tripkit (a fresh copy each call)."""
    data: dict[str, Any] = json.loads(_plans_text())
    return data


@dataclass(frozen=True)
class Plan:
    """One profile's limits: ``value(key)`` is the number, ``limits[key]`` its source."""

    name: str
    label: str
    limits: Mapping[str, Mapping[str, Any]]

    def value(self, key: str) -> float | None:
        entry = self.limits.get(key)
        if entry is None or entry.get("value") is None:
            return None
        return float(entry["value"])

    def cite(self, key: str) -> str:
        entry = self.limits.get(key)
        return f"{entry['source']}; {entry['date']}" if entry else ""

    @property
    def redis_commands_per_day(self) -> float | None:
        """The Redis allowance per day: a daily limit, or a monthly one pro rata."""
        daily = self.value("redis_commands_per_day")
        monthly = self.value("redis_commands_per_month")
        return daily if daily is not None else (monthly / DAYS_PER_MONTH if monthly else None)

    @property
    def redis_commands_per_month(self) -> float | None:
        monthly = self.value("redis_commands_per_month")
        daily = self.value("redis_commands_per_day")
        return monthly if monthly is not None else (daily * DAYS_PER_MONTH if daily else None)


def profiles() -> list[str]:
    return list(load_plans()["profiles"])


def plan(profile: str) -> Plan:
    """The named profile's limits; raises :class:`UsageError` naming the known ones."""
    known = load_plans()["profiles"]
    if profile not in known:
        raise UsageError(
            f"Unknown plan profile {profile!r}.",
            remedy=f"Known profiles: {', '.join(known)} (tripkit/data/plan_limits.json).",
        )
    entry = known[profile]
    return Plan(profile, entry["label"], entry["limits"])


def openai_prices() -> dict[str, dict[str, Any]]:
    """USD per 1M tokens by model: ``input``, ``cached_input``, ``output``, source, date."""
    models: dict[str, dict[str, Any]] = load_plans()["openai"]["models"]
    return models


# --------------------------------------------------------------------------- I/O: Redis


@dataclass
class Harvest:
    """What one harvest did: records found, how many were new, the commands it cost."""

    found: int = 0
    new: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    csv_path: str = ""

    @property
    def total_commands(self) -> int:
        return sum(self.commands.values())


async def collect_run_records(
    transport: Transport, prefix: str = "tripkit", *, batch: int = 100
) -> list[dict[str, Any]]:
    """Every run record under ``prefix``, with ``recordBytes`` and ``sessionBytes`` added.

    Cost: one SCAN per 500 keys scanned, then per ``batch`` records one pipeline of two
    MGETs (the records, and their sessions, to measure the storage a generation holds):
    see ``transport.counter``. Upstash bills an MGET as one command.
    """
    run_prefix = keys.run_key(prefix, "0" * 32).removesuffix("0" * 32)
    found: list[str] = []
    cursor: bytes | int = b"0"
    while True:
        reply = await transport.execute(
            "SCAN", cursor, "MATCH", f"{run_prefix}*", "COUNT", 500, retry_safe=True
        )
        if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], list):
            raise UsageError("SCAN returned an unexpected reply.")
        cursor = reply[0] if isinstance(reply[0], bytes | int) else b"0"
        found.extend(k.decode() for k in reply[1] if isinstance(k, bytes))
        if cursor in (b"0", 0):
            break
    names = sorted(set(found))
    records: list[dict[str, Any]] = []
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        ids = [name.removeprefix(run_prefix) for name in chunk]
        session_keys = [keys.session_key(prefix, i) for i in ids]
        runs, sessions = await transport.pipeline(["MGET", *chunk], ["MGET", *session_keys])
        if isinstance(runs, Exception) or not isinstance(runs, list):
            raise UsageError(f"MGET of run records failed: {runs!r}")
        docs = sessions if isinstance(sessions, list) else [None] * len(chunk)
        for raw, doc in zip(runs, docs, strict=True):
            if not isinstance(raw, bytes):
                continue  # expired between SCAN and MGET
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            record["recordBytes"] = len(raw)
            record["sessionBytes"] = len(doc) if isinstance(doc, bytes) else None
            if isinstance(doc, bytes):
                _fill_from_session(record, doc)
            records.append(record)
    return records


def _fill_from_session(record: dict[str, Any], doc: bytes) -> None:
    """A failed run's record (written by ``on_failure``) has no timings: take the ones its
    session still holds, so its duration and polls can be estimated too."""
    try:
        session = json.loads(doc)
    except ValueError:
        return
    if not isinstance(session, dict):
        return
    for ours, theirs in (("queuedAt", "createdAt"), ("startedAt", "startedAt")):
        if not record.get(ours) and session.get(theirs):
            record[ours] = session[theirs]
    if "summaryAt" not in record and isinstance(session.get("summaries"), list):
        record["summaryCount"] = len(session["summaries"])


async def harvest_from_redis(
    csv_path: str | Path, *, env_dir: str | Path | None = None
) -> tuple[pd.DataFrame, Harvest]:
    """Harvest the configured Redis's run records into ``csv_path``; the merged history.

    The settings come from the environment / ``.env.local`` / ``.env`` in ``env_dir``, as
    everywhere in tripkit (in the local default, the stack whose env was exported).
    """
    from tripkit.config import load_settings
    from tripkit.transport import connect

    settings = load_settings(env_dir)
    transport = connect(settings)
    try:
        before = transport.counter.snapshot()
        records = await collect_run_records(transport, settings.key_prefix)
        cost = dict(transport.counter.since(before))
    finally:
        await transport.aclose()
    known = set(read_history(csv_path)["session_id"]) if Path(csv_path).exists() else set()
    history = harvest(records, csv_path)
    new = sum(1 for r in records if r.get("sessionId") not in known)
    return history, Harvest(len(records), new, cost, str(csv_path))


# --------------------------------------------------------------------------- records -> table


def _ts(value: Any) -> Any:
    if value is None or value == "":
        return pd.NaT
    return pd.to_datetime(value, utc=True, errors="coerce")


def _seconds(later: Any, earlier: Any) -> float:
    if pd.isna(later) or pd.isna(earlier):
        return math.nan
    return float((later - earlier).total_seconds())


def _int_or_nan(value: Any) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    )


def _row(record: Mapping[str, Any], harvested_at: str) -> dict[str, Any]:
    queued = _ts(record.get("queuedAt"))
    completed = _ts(record.get("completedAt"))
    failed = _ts(record.get("failedAt"))
    ended = completed if not pd.isna(completed) else failed
    first = _ts(record.get("firstSummaryAt"))
    attempts = record.get("attempts") or {}
    retries = sum(int(v) for v in attempts.values() if isinstance(v, int)) if attempts else 0
    usage = [u for u in record.get("usage") or [] if isinstance(u, dict)]
    steps = _int_or_nan(record.get("steps"))
    status = record.get("status") or ("failed" if not pd.isna(failed) else "unknown")
    return {
        "session_id": record.get("sessionId"),
        "run_id": record.get("runId"),
        "status": status,
        "error": record.get("error"),
        "queued_at": queued,
        "started_at": _ts(record.get("startedAt")),
        "first_summary_at": first,
        "completed_at": completed,
        "failed_at": failed,
        "time_to_first_summary_s": _seconds(first, queued),
        "duration_s": _seconds(ended, queued),
        "bundles": _int_or_nan(record.get("bundles")),
        "summaries": float(len(record.get("summaryAt") or []) or record.get("summaryCount") or 0),
        "steps": steps,
        "model_calls": _int_or_nan(record.get("modelCalls")),
        # The finalize step is not in ``attempts``: counted as one attempt.
        "attempts_total": steps + retries if not math.isnan(steps) else math.nan,
        "retries": float(retries),
        "prompt_tokens": float(sum(int(u.get("promptTokens") or 0) for u in usage)),
        "completion_tokens": float(sum(int(u.get("completionTokens") or 0) for u in usage)),
        "models": ",".join(sorted({str(u.get("model")) for u in usage})),
        "usage_json": json.dumps(usage, separators=(",", ":")),
        "record_bytes": _int_or_nan(record.get("recordBytes")),
        "session_bytes": _int_or_nan(record.get("sessionBytes")),
        "harvested_at": harvested_at,
    }


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=COLUMNS)
    for column in _TIMES:
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    for column in _NUMBERS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("session_id", "run_id", "status", "error", "models", "usage_json"):
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    return frame


def generations_table(
    records: Iterable[Mapping[str, Any]], *, harvested_at: datetime | None = None
) -> pd.DataFrame:
    """One tidy row per run record (records without a ``sessionId`` are skipped)."""
    stamp = (harvested_at or datetime.now(UTC)).isoformat()
    rows = [_row(r, stamp) for r in records if r.get("sessionId")]
    return _typed(pd.DataFrame(rows, columns=COLUMNS))


def read_history(csv_path: str | Path) -> pd.DataFrame:
    """The harvested history (typed); raises :class:`UsageError` if the file is missing."""
    path = Path(csv_path)
    if not path.exists():
        raise UsageError(
            f"No history CSV at {path}.",
            remedy="Harvest one first (data_source='redis'), or point history_csv at a CSV.",
        )
    return _typed(pd.read_csv(path, dtype={"session_id": str, "run_id": str}))


def harvest(records: Iterable[Mapping[str, Any]], csv_path: str | Path) -> pd.DataFrame:
    """Merge run records into the history CSV, one row per session id (the newest harvest
    wins), written atomically; returns the merged history. This is what keeps a history
    past the records' TTL in Redis."""
    path = Path(csv_path)
    fresh = generations_table(records)
    old = read_history(path) if path.exists() else generations_table([])
    parts = [f for f in (old, fresh) if not f.empty]
    merged = pd.concat(parts, ignore_index=True) if parts else fresh
    merged = merged.drop_duplicates(subset="session_id", keep="last")
    merged = merged.sort_values("queued_at", na_position="last", kind="stable")
    merged = _typed(merged.reset_index(drop=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as out:
        merged.to_csv(out, index=False)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
    os.replace(tmp, path)
    return merged


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- service APIs


def _envelope_runs(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, list):
        return [run for item in payload for run in _envelope_runs(item)]
    if isinstance(payload, dict) and "data" in payload:
        return _envelope_runs(payload["data"])
    if isinstance(payload, dict) and "run_id" in payload:
        return [payload]
    return []


def inngest_runs_table(payload: Any) -> pd.DataFrame:
    """Runs from Inngest's runs API envelopes (one, or a list): executions per run.

    ``executions_min`` is 1 run + its steps; ``executions_worst`` counts every step
    attempt (whether retried attempts are billed is not documented). Inngest Cloud's
    run objects carry no steps: those columns are then empty.
    """
    rows = []
    for run in _envelope_runs(payload):
        steps = run.get("steps")
        step_count = run.get("step_count", len(steps) if isinstance(steps, list) else None)
        attempts = (
            sum(max(1, int(s.get("attempts") or 0)) for s in steps)
            if isinstance(steps, list)
            else None
        )
        rows.append(
            {
                "run_id": run.get("run_id"),
                "status": run.get("status"),
                "started_at": _ts(run.get("run_started_at") or run.get("started_at")),
                "ended_at": _ts(run.get("ended_at")),
                "steps": _int_or_nan(step_count),
                "step_attempts": _int_or_nan(attempts),
            }
        )
    frame = pd.DataFrame(
        rows, columns=["run_id", "status", "started_at", "ended_at", "steps", "step_attempts"]
    )
    frame["executions_min"] = 1 + frame["steps"]
    frame["executions_worst"] = 1 + frame["step_attempts"]
    return frame


@dataclass
class UpstashStats:
    """The fields of Upstash's stats API the report uses (``None``: absent)."""

    daily: pd.DataFrame  # date, commands (from ``dailyrequests``)
    today_commands: float | None
    month_commands: float | None
    month_billing_usd: float | None
    current_storage_bytes: float | None


def upstash_stats(payload: Mapping[str, Any]) -> UpstashStats:
    """Parse ``GET /v2/redis/stats/{id}``: ``dailyrequests`` is ``[{x: time, y: n}]``."""

    def number(name: str) -> float | None:
        value = payload.get(name)
        return float(value) if isinstance(value, int | float) else None

    points = [p for p in payload.get("dailyrequests") or [] if isinstance(p, dict)]
    daily = pd.DataFrame(
        {
            "date": [_upstash_day(p.get("x")) for p in points],
            "commands": [float(p.get("y") or 0) for p in points],
        }
    )
    daily = daily.dropna(subset=["date"]).groupby("date", as_index=False)["commands"].sum()
    return UpstashStats(
        daily,
        number("daily_net_commands"),
        number("total_monthly_requests"),
        number("total_monthly_billing"),
        number("current_storage"),
    )


def _upstash_day(value: Any) -> date | None:
    # "2025-08-31 15:12:52.799480932 +0000 UTC": the date is all the report needs.
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


# --------------------------------------------------------------------------- pure computations


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


def _estimates(frame: pd.DataFrame, poll_interval: float, read_regions: int) -> pd.DataFrame:
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


# --------------------------------------------------------------------------- display helpers


class Markdown(str):
    """A string Jupyter shows as Markdown (no IPython import needed)."""

    def _repr_markdown_(self) -> str:
        return str(self)


class Table:
    """A DataFrame Jupyter shows in full (pandas' own HTML truncates long cells);
    ``.frame`` is the DataFrame itself."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def _repr_html_(self) -> str:
        return str(self.frame.to_html(na_rep="n/a"))

    def __repr__(self) -> str:
        return str(self.frame.to_string(na_rep="n/a"))


def _profile_order(plans: Sequence[Plan]) -> Any:
    """A sort key keeping the profiles in report order (the chosen one first)."""
    order = {p.name: i for i, p in enumerate(plans)}

    def key(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "profile" else column

    return key


class Chart:
    """A matplotlib figure Jupyter shows as a PNG, without pyplot's global state."""

    def __init__(self, figure: Figure) -> None:
        self.figure = figure

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        return "<chart>"


def _figure(width: float = 7.0, height: float = 3.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=72, layout="constrained")


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "unlimited"
    return f"{value:,.{digits}f}"


def _usd(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:,.4f}"


def _size(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if value >= scale:
            return f"{value / scale:,.1f}".removesuffix(".0") + f" {unit}"
    return f"{value:,.0f} B"


def _limit_text(entry: Mapping[str, Any]) -> str:
    value, unit = float(entry["value"]), str(entry["unit"])
    if unit.startswith("bytes"):
        return f"{_size(value)}{unit.removeprefix('bytes')}"
    return f"{_num(value, 2 if value < 1 else 0)} {unit}"


def _parse_end(period_end: str | date | datetime | None) -> datetime:
    """The period's end: now, or a date (its end, UTC) or an ISO timestamp."""
    if period_end is None:
        return datetime.now(UTC)
    if isinstance(period_end, datetime):
        return period_end if period_end.tzinfo else period_end.replace(tzinfo=UTC)
    if isinstance(period_end, date):
        return datetime.combine(period_end, datetime.min.time(), UTC) + timedelta(days=1)
    try:
        if len(period_end) == 10:
            return _parse_end(date.fromisoformat(period_end))
        return _parse_end(datetime.fromisoformat(period_end))
    except ValueError:
        raise UsageError(
            f"period_end {period_end!r} is not a date (YYYY-MM-DD) or ISO timestamp."
        ) from None


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"No {what} file at {path}.") from None
    except ValueError as exc:
        raise UsageError(f"The {what} file {path} is not JSON: {exc}.") from None


# --------------------------------------------------------------------------- the report


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
                {"value": [_num(v, 0 if float(v).is_integer() else 1) for v in summary.values()]},
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
                    f"commands per generation ({basis})": [_num(parts[k], 1) for k in labels],
                    "share": [f"{100 * parts[k] / total:.0f}%" for k in labels],
                },
                index=pd.Index(list(labels.values()), name="Redis commands"),
            )
        )

    def usage_vs_limits(self) -> Table:
        peak = peak_concurrency(self.generations) if not self.empty else 0
        tables = [
            monthly_usage(
                p,
                self.per,
                self.generations_per_day,
                self.poll_interval,
                read_regions=self.read_regions,
                ttl_s=self.ttl_s,
                peak_concurrent=peak,
            )
            for p in self.plans
        ]
        table = pd.concat(tables, ignore_index=True)
        out = pd.DataFrame(
            {
                "profile": table["profile"],
                "item": table["item"],
                "projected": [
                    _size(v) if "bytes" in i else _num(v)
                    for v, i in zip(table["projected"], table["item"], strict=True)
                ],
                "limit": [
                    _size(v) if "bytes" in i else _num(v)
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

    def tokens_table(self) -> Table | Markdown:
        if self.empty:
            return Markdown("No generations in the period.")
        table, _ = tokens_by_model(self.generations, self.prices)
        if table.empty:
            return Markdown("No token usage recorded.")
        table["cost per generation"] = table["cost_usd"] / len(self.generations)
        out = table.set_index("model")
        for column in ("calls", "prompt_tokens", "completion_tokens"):
            out[column] = out[column].map(_num)
        for column in ("cost_usd", "cost per generation"):
            out[column] = out[column].map(_usd)
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
        table["Redis commands / generation"] = table["Redis commands / generation"].map(_num)
        for column in ("Redis allows / day", "Inngest allows / day", "generations / day that fit"):
            table[column] = table[column].map(_num)
        return Table(table.set_index(["profile", "generation lasting", "poll every (s)"]))

    def projected_cost(self) -> Table:
        table = pd.concat(
            [
                projected_monthly_cost(
                    p,
                    self.per,
                    self.generations_per_day,
                    self.poll_interval,
                    read_regions=self.read_regions,
                    ttl_s=self.ttl_s,
                )
                for p in self.plans
            ],
            ignore_index=True,
        )
        for column in ("monthly", "free", "beyond_free"):
            table[column] = [
                _num(v, 2 if "GB" in item else 0)
                for v, item in zip(table[column], table["item"], strict=True)
            ]
        table.loc[table["service"].eq("OpenAI"), ["monthly", "free", "beyond_free"]] = "-"
        table["cost_usd"] = table["cost_usd"].map(_usd)
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
                _num(measured),
                _num(estimated),
            )
            rows["Redis commands today (daily_net_commands)"] = (_num(u.today_commands), "-")
            rows["Redis commands this month (total_monthly_requests)"] = (
                _num(u.month_commands),
                "-",
            )
            rows["Upstash billing this month (total_monthly_billing)"] = (
                _usd(u.month_billing_usd),
                "-",
            )
            rows["Redis storage now (current_storage)"] = (
                _size(u.current_storage_bytes),
                _size(storage_bytes(self.per, self.generations_per_day, self.ttl_s)),
            )
        if self.inngest_runs is not None:
            runs = self.inngest_runs
            estimated_min = self.generations["executions_min"].sum() if not self.empty else 0
            estimated_worst = self.generations["executions_worst"].sum() if not self.empty else 0
            failed = int(self.generations["status"].eq("failed").sum()) if not self.empty else 0
            rows["Inngest runs (on_failure runs included)"] = (
                _num(len(runs)),
                _num(len(self.generations) + failed),
            )
            rows["Inngest executions (runs + steps)"] = (
                _num(runs["executions_min"].sum(min_count=1)),
                _num(estimated_min),
            )
            rows["Inngest executions, every attempt counted"] = (
                _num(runs["executions_worst"].sum(min_count=1)),
                _num(estimated_worst),
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
        fig = _figure()
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
        fig = _figure()
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
        if self.empty:
            return Markdown("No generations in the period.")
        table, _ = tokens_by_model(self.generations, self.prices)
        if table.empty:
            return Markdown("No token usage recorded.")
        fig = _figure()
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
            ax.text(total, y, f"  {_usd(cost)}", va="center", fontsize=8)
        ax.set_xlim(right=float((table["prompt_tokens"] + table["completion_tokens"]).max()) * 1.2)
        ax.set_xlabel("tokens in the period")
        ax.set_title("OpenAI tokens and cost by model")
        ax.legend(fontsize=8, loc="lower right")
        return Chart(fig)


async def build_report(
    *,
    period_days: int = 30,
    plan_profile: str = "current",
    poll_interval: float = 2.0,
    read_regions: int = 0,
    data_source: str = "redis",
    history_csv: str | Path = "reports/data/runs.csv",
    upstash_stats_json: str | Path | None = None,
    inngest_runs_json: str | Path | None = None,
    generations_per_day: float | None = None,
    env_dir: str | Path | None = ".",
    period_end: str | date | datetime | None = None,
    ttl_s: float | None = None,
) -> UsageReport:
    """Gather the data (harvesting Redis when ``data_source='redis'``) and compute the
    report; the notebook's parameters map 1:1 to these arguments."""
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
    end = _parse_end(period_end)
    harvest_info = None
    if data_source == "redis":
        history, harvest_info = await harvest_from_redis(history_csv, env_dir=env_dir)
        if ttl_s is None:
            from tripkit.config import load_settings

            ttl_s = float(load_settings(env_dir).session_ttl)
    else:
        history = read_history(history_csv)
    prices = openai_prices()
    period = _estimates(in_period(history, period_days, end), poll_interval, read_regions)
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
        data_source=f"{data_source} (history: {history_csv})",
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


def build_report_sync(**parameters: Any) -> UsageReport:
    """:func:`build_report` outside an event loop (scripts; notebooks ``await`` it)."""
    return asyncio.run(build_report(**parameters))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tripkit.usage harvest [CSV]``: only the harvest (a few commands, no
    kernel), for cron every 30 minutes so no run record expires unharvested between the
    daily reports."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m tripkit.usage", description="Harvest run records into the history CSV."
    )
    parser.add_argument("command", choices=["harvest"])
    parser.add_argument("csv", nargs="?", default="reports/data/runs.csv", help="the history CSV")
    parser.add_argument("--env-dir", default=".", help="where .env.local and .env are read from")
    args = parser.parse_args(argv)
    try:
        history, done = asyncio.run(harvest_from_redis(args.csv, env_dir=args.env_dir))
    except TripkitError as exc:
        print(f"tripkit: {exc}", file=sys.stderr)
        return 2
    print(
        f"harvested {done.found} run records ({done.new} new) for {done.total_commands} "
        f"Redis commands; {len(history)} generations in {args.csv}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
