"""What the generations did, as tables: run records, the CSV history, the services' counts.

Where the data comes from:

- **Run records**: the worker writes one :class:`~tripkit.models.RunRecord` per run to
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

The conversions to tables are pure; the I/O (the CSV, Redis) is in the last two sections.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import ValidationError

from tripkit import keys, sessions
from tripkit.errors import StoreError
from tripkit.models import RunRecord
from tripkit.usage.plans import UsageError

if TYPE_CHECKING:
    from tripkit.transport import Transport

__all__ = [
    "COLUMNS",
    "Harvest",
    "HarvestedRecord",
    "UpstashStats",
    "collect_run_records",
    "generations_table",
    "harvest",
    "harvest_from_redis",
    "inngest_runs_table",
    "merge_history",
    "read_history",
    "upstash_stats",
]

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
    "cancelled_at",
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
_TIMES = [
    "queued_at",
    "started_at",
    "first_summary_at",
    "completed_at",
    "failed_at",
    "cancelled_at",
]
_TEXT = ["session_id", "run_id", "status", "error", "models", "usage_json"]
_NUMBERS = [c for c in COLUMNS if c not in {*_TIMES, *_TEXT, "harvested_at"}]


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


@dataclass(frozen=True)
class HarvestedRecord:
    """A run record as a harvest found it, with the bytes it and its session hold in Redis
    and, when the record lists no summary times, how many summaries its session has."""

    record: RunRecord
    record_bytes: int | None = None
    session_bytes: int | None = None
    summary_count: int | None = None


def _row(item: RunRecord | HarvestedRecord, harvested_at: str) -> dict[str, Any]:
    found = item if isinstance(item, HarvestedRecord) else HarvestedRecord(item)
    record = found.record
    queued = _ts(record.queued_at)
    completed = _ts(record.completed_at)
    failed = _ts(record.failed_at)
    cancelled = _ts(record.cancelled_at)
    ended = next((t for t in (completed, failed, cancelled) if not pd.isna(t)), pd.NaT)
    first = _ts(record.first_summary_at)
    retries = sum(record.attempts.values())
    steps = _int_or_nan(record.steps)
    usage = [u.model_dump(mode="json", by_alias=True) for u in record.usage]
    return {
        "session_id": record.session_id,
        "run_id": record.run_id,
        "status": record.status.value,
        "error": record.error,
        "queued_at": queued,
        "started_at": _ts(record.started_at),
        "first_summary_at": first,
        "completed_at": completed,
        "failed_at": failed,
        "cancelled_at": cancelled,
        "time_to_first_summary_s": _seconds(first, queued),
        "duration_s": _seconds(ended, queued),
        "bundles": _int_or_nan(record.bundles),
        "summaries": float(len(record.summary_at) or found.summary_count or 0),
        "steps": steps,
        "model_calls": _int_or_nan(record.model_calls),
        # Records of older runs (plan and finalize steps) lack finalize in ``attempts``.
        "attempts_total": steps + retries if not math.isnan(steps) else math.nan,
        "retries": float(retries),
        "prompt_tokens": float(sum(u.prompt_tokens for u in record.usage)),
        "completion_tokens": float(sum(u.completion_tokens for u in record.usage)),
        "models": ",".join(sorted({u.model for u in record.usage})),
        "usage_json": json.dumps(usage, separators=(",", ":")),
        "record_bytes": _int_or_nan(found.record_bytes),
        "session_bytes": _int_or_nan(found.session_bytes),
        "harvested_at": harvested_at,
    }


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=COLUMNS)
    for column in _TIMES:
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    for column in _NUMBERS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in _TEXT:
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    return frame


def generations_table(
    records: Iterable[RunRecord | HarvestedRecord], *, harvested_at: datetime | None = None
) -> pd.DataFrame:
    """One tidy row per run record."""
    stamp = (harvested_at or datetime.now(UTC)).isoformat()
    rows = [_row(r, stamp) for r in records]
    return _typed(pd.DataFrame(rows, columns=COLUMNS))


def merge_history(old: pd.DataFrame, fresh: pd.DataFrame) -> pd.DataFrame:
    """One row per session id, the fresh harvest winning (a record is rewritten as its run
    goes on), in queue order."""
    parts = [f for f in (old, fresh) if not f.empty]
    merged = pd.concat(parts, ignore_index=True) if parts else fresh
    merged = merged.drop_duplicates(subset="session_id", keep="last")
    merged = merged.sort_values("queued_at", na_position="last", kind="stable")
    return _typed(merged.reset_index(drop=True))


def _run_record(raw: Any, doc: Any) -> HarvestedRecord | None:
    """A run record as MGET returned it, with the bytes it and its session hold (``None``:
    expired, or not a record)."""
    if not isinstance(raw, bytes):
        return None  # expired between SCAN and MGET
    try:
        record = RunRecord.model_validate_json(raw)
    except ValidationError:
        return None
    if not isinstance(doc, bytes):
        return HarvestedRecord(record, record_bytes=len(raw))
    try:
        session = sessions.decode(doc)
    except StoreError:  # not a session this tripkit can read: the record alone
        return HarvestedRecord(record, record_bytes=len(raw), session_bytes=len(doc))
    # A failed run's record (written by ``on_failure``) has no timings: take the ones its
    # session still holds, so its duration and polls can be estimated too.
    record = record.model_copy(
        update={
            "queued_at": record.queued_at or session.created_at,
            "started_at": record.started_at or session.started_at,
        }
    )
    return HarvestedRecord(
        record,
        record_bytes=len(raw),
        session_bytes=len(doc),
        summary_count=None if record.summary_at else len(session.summaries),
    )


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


# --------------------------------------------------------------------------- I/O: the history CSV


def read_history(csv_path: str | Path) -> pd.DataFrame:
    """The harvested history (typed); raises :class:`UsageError` if the file is missing."""
    path = Path(csv_path)
    if not path.exists():
        raise UsageError(
            f"No history CSV at {path}.",
            remedy="Harvest one first (data_source='redis'), or point history_csv at a CSV.",
        )
    return _typed(pd.read_csv(path, dtype={"session_id": str, "run_id": str}))


def harvest(records: Iterable[RunRecord | HarvestedRecord], csv_path: str | Path) -> pd.DataFrame:
    """Merge run records into the history CSV, one row per session id (the newest harvest
    wins), written atomically; returns the merged history. This is what keeps a history
    past the records' TTL in Redis."""
    path = Path(csv_path)
    fresh = generations_table(records)
    old = read_history(path) if path.exists() else generations_table([])
    merged = merge_history(old, fresh)
    _write_atomically(merged, path)
    return merged


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Replace ``path`` in one step (a reader never sees half a CSV), keeping its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as out:
        frame.to_csv(out, index=False)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
) -> list[HarvestedRecord]:
    """Every run record under ``prefix``, with the bytes it and its session hold.

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
    records: list[HarvestedRecord] = []
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        ids = [name.removeprefix(run_prefix) for name in chunk]
        session_keys = [keys.session_key(prefix, i) for i in ids]
        runs, sessions = await transport.pipeline(["MGET", *chunk], ["MGET", *session_keys])
        if isinstance(runs, Exception) or not isinstance(runs, list):
            raise UsageError(f"MGET of run records failed: {runs!r}")
        docs = sessions if isinstance(sessions, list) else [None] * len(chunk)
        for raw, doc in zip(runs, docs, strict=True):
            if (record := _run_record(raw, doc)) is not None:
                records.append(record)
    return records


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
    new = sum(1 for r in records if r.record.session_id not in known)
    return history, Harvest(len(records), new, cost, str(csv_path))
