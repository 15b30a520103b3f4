"""tripkit.usage.history: harvesting run records from a real Redis (and from cron), the
generations table, the CSV history, and the services' answers as tables."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import generate_and_poll, run_cli, run_record

from tripkit import keys
from tripkit.devstack.stack import LocalStack
from tripkit.transport import Transport
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport
from tripkit.usage import history
from tripkit.usage.plans import UsageError

# --------------------------------------------------------------------------- against real servers


@pytest.fixture(params=["resp", "rest"])
async def stack_transport(request: pytest.FixtureRequest, stack: LocalStack) -> Any:
    transport: Transport = (
        RespTransport(stack.redis_url)
        if request.param == "resp"
        else RestTransport(stack.rest_url, stack.rest_token)
    )
    yield transport
    await transport.aclose()


async def test_collect_run_records_finds_the_record(
    stack: LocalStack, stack_transport: Transport
) -> None:
    session_id, _ = generate_and_poll(stack.api_url, 0.1)
    run_key = keys.run_key("tripkit", session_id)
    raw = redis.Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + 10
    while not raw.exists(run_key):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    raw.close()

    records = await history.collect_run_records(stack_transport, "tripkit")
    mine = [r for r in records if r.record.session_id == session_id]
    assert len(mine) == 1
    assert mine[0].record.status == "completed" and mine[0].record.bundles == 2
    assert mine[0].record_bytes is not None and mine[0].record_bytes > 100
    assert mine[0].session_bytes is not None and mine[0].session_bytes > 500
    # Cost: SCANs and one pipeline of two MGETs per 100 records, nothing else.
    sent = stack_transport.counter.by_name
    assert set(sent) == {"SCAN", "MGET"}
    assert sent["MGET"] == 2 * math.ceil(len(records) / 100)


async def test_harvest_from_redis_writes_the_history(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id, _ = generate_and_poll(stack.api_url, 0.1)
    time.sleep(0.5)  # the run record follows the final status
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    csv = tmp_path / "history" / "runs.csv"
    table, harvested = await history.harvest_from_redis(csv, env_dir=tmp_path)
    assert csv.exists()
    assert session_id in set(table["session_id"])
    assert harvested.found == harvested.new == len(table)
    assert set(harvested.commands) == {"SCAN", "MGET"}
    # A second harvest finds the same records: nothing new, no duplicate rows.
    again, second = await history.harvest_from_redis(csv, env_dir=tmp_path)
    assert second.new == 0 and len(again) == len(table)


def test_harvest_command_for_cron(stack: LocalStack, tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    result = run_cli("harvest", str(csv), cwd=tmp_path, env=stack.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("harvested ") and csv.exists()
    assert stack.rest_token not in result.stdout + result.stderr


# --------------------------------------------------------------------------- records and history


def test_generations_table_from_a_record() -> None:
    row = history.generations_table([run_record("a" * 32)]).iloc[0]
    assert row["status"] == "completed"
    assert row["duration_s"] == 300 and row["time_to_first_summary_s"] == 60
    assert row["bundles"] == row["steps"] == row["model_calls"] == 2  # one step per bundle
    assert row["retries"] == 2 and row["attempts_total"] == 4
    assert row["prompt_tokens"] == 1000 and row["completion_tokens"] == 900
    assert row["models"] == "gpt-4o-mini"


def test_harvest_dedups_by_session_id(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    first = run_record("a" * 32, status="running", completedAt=None)
    history.harvest([first, run_record("b" * 32)], csv)
    merged = history.harvest([run_record("a" * 32), run_record("c" * 32)], csv)
    assert sorted(merged["session_id"]) == ["a" * 32, "b" * 32, "c" * 32]
    assert merged.set_index("session_id").loc["a" * 32, "status"] == "completed"
    again = history.read_history(csv)
    assert len(again) == 3
    assert str(again["queued_at"].dtype).startswith("datetime64")
    assert again.set_index("session_id").loc["a" * 32, "duration_s"] == 300
    assert not list(tmp_path.glob(".runs.csv.*"))  # the atomic write left no temp file
    umask = os.umask(0)
    os.umask(umask)
    assert csv.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_read_history_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No history CSV"):
        history.read_history(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- service APIs


def test_inngest_runs_envelopes() -> None:
    run = {
        "run_id": "01R",
        "status": "Completed",
        "run_started_at": "2026-06-01T10:00:00Z",
        "ended_at": "2026-06-01T10:05:00Z",
        "steps": [{"name": "bundle-0", "attempts": 1}, {"name": "bundle-1", "attempts": 3}],
    }
    cloud = {"run_id": "01C", "status": "Completed", "run_started_at": "2026-06-01T11:00:00Z"}
    table = history.inngest_runs_table([{"data": [run]}, {"data": cloud, "metadata": {}}])
    assert list(table["run_id"]) == ["01R", "01C"]
    assert table.iloc[0]["executions_min"] == 3 and table.iloc[0]["executions_worst"] == 5
    assert math.isnan(table.iloc[1]["executions_min"])  # Inngest Cloud gives no steps


def test_upstash_stats_fields() -> None:
    stats = history.upstash_stats(
        {
            "daily_net_commands": 7,
            "dailyrequests": [
                {"x": "2025-08-31 15:12:52.799480932 +0000 UTC", "y": 120},
                {"x": "2025-09-01 15:12:52.799480932 +0000 UTC", "y": 7},
            ],
            "total_monthly_requests": 12345,
            "total_monthly_billing": 0.5,
            "current_storage": 2048,
        }
    )
    assert stats.today_commands == 7 and stats.month_commands == 12345
    assert stats.month_billing_usd == 0.5 and stats.current_storage_bytes == 2048
    assert list(stats.daily["commands"]) == [120, 7]
    assert str(stats.daily["date"].iloc[0]) == "2025-08-31"
