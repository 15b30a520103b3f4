"""tripkit.usage: the command-count formula against a real generation, harvesting run
records from a real Redis, and the pure computations on hand-computed examples."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tripkit import keys, usage
from tripkit.devstack.stack import LocalStack
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.models import RunRecord
from tripkit.transport import Transport
from tripkit.transport.resp import RespTransport
from tripkit.transport.rest import RestTransport

PREFERENCES = {"interests": ["food"], "tripLengthDays": 2, "budget": 800, "bundleCount": 2}


def _record(session_id: str, **extra: Any) -> RunRecord:
    """A run record as the worker writes it (see tripkit.worker)."""
    record = {
        "sessionId": session_id,
        "runId": "01RUN" + session_id[:6],
        "queuedAt": "2026-06-01T10:00:00+00:00",
        "startedAt": "2026-06-01T10:00:01+00:00",
        "firstSummaryAt": "2026-06-01T10:01:00+00:00",
        "summaryAt": ["2026-06-01T10:01:00+00:00", "2026-06-01T10:03:00+00:00"],
        "attempts": {"plan": 0, "bundle-0": 2, "bundle-1": 0},
        "bundles": 2,
        "steps": 4,
        "modelCalls": 3,
        "usage": [
            {"model": "gpt-4o-mini", "promptTokens": 300, "completionTokens": 80},
            {"model": "gpt-4o-mini", "promptTokens": 350, "completionTokens": 400},
            {"model": "gpt-4o-mini", "promptTokens": 350, "completionTokens": 420},
        ],
        "status": "completed",
        "completedAt": "2026-06-01T10:05:00+00:00",
    }
    return RunRecord.model_validate(record | extra)


# --------------------------------------------------------------------------- against real servers


def _generate_and_poll(api_url: str, interval: float) -> tuple[str, int]:
    """POST a request, then poll every ``interval`` s until final, as the browser does."""
    session_id = httpx.post(f"{api_url}/api/generate-bundles", json=PREFERENCES, timeout=10).json()[
        "sessionId"
    ]
    polls = 0
    deadline = time.monotonic() + 60
    while True:
        polls += 1
        body = httpx.get(f"{api_url}/api/session/{session_id}", timeout=10).json()
        if body["status"] in ("completed", "failed"):
            return session_id, polls
        assert time.monotonic() < deadline, "the generation did not finish"
        time.sleep(interval)


def test_command_formula_matches_a_real_generation(stack: LocalStack) -> None:
    counter = RedisCommandCounter(stack.redis_url)
    raw = redis.Redis.from_url(stack.redis_url)
    try:
        counter.reset()
        interval = 0.2
        session_id, polls = _generate_and_poll(stack.api_url, interval)
        run_key = keys.run_key("tripkit", session_id)
        # The run record is written just after the final status: wait for it (EXISTS is
        # not a GET or SET, so it does not disturb the counts compared below).
        deadline = time.monotonic() + 10
        while not raw.exists(run_key):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        counts = counter.counts()
        record = RunRecord.model_validate_json(raw.get(run_key) or b"{}")
    finally:
        counter.close()
        raw.close()

    assert record.bundles is not None
    formula = usage.redis_commands_per_generation(record.bundles, polls)
    sets = formula["create"] + formula["writes"] + formula["run_record"]
    gets = formula["worker_reads"] + formula["polls"]
    assert counts.get("SET") == sets == 4 + record.bundles
    assert counts.get("GET") == gets == 1 + polls
    assert counts["SET"] + counts["GET"] == formula["total"]
    # Polls estimated from the record's duration: at most the formula's count (request
    # latency stretches each interval a little), and close to it.
    row = usage.generations_table([record]).iloc[0]
    estimated = usage.polls_per_generation(row["duration_s"], interval)
    assert estimated - 2 <= polls <= estimated + 1


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
    session_id, _ = _generate_and_poll(stack.api_url, 0.1)
    run_key = keys.run_key("tripkit", session_id)
    raw = redis.Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + 10
    while not raw.exists(run_key):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    raw.close()

    records = await usage.collect_run_records(stack_transport, "tripkit")
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
    session_id, _ = _generate_and_poll(stack.api_url, 0.1)
    time.sleep(0.5)  # the run record follows the final status
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    csv = tmp_path / "history" / "runs.csv"
    history, harvested = await usage.harvest_from_redis(csv, env_dir=tmp_path)
    assert csv.exists()
    assert session_id in set(history["session_id"])
    assert harvested.found == harvested.new == len(history)
    assert set(harvested.commands) == {"SCAN", "MGET"}
    # A second harvest finds the same records: nothing new, no duplicate rows.
    again, second = await usage.harvest_from_redis(csv, env_dir=tmp_path)
    assert second.new == 0 and len(again) == len(history)


def test_harvest_command_for_cron(stack: LocalStack, tmp_path: Path) -> None:
    drop = ("UPSTASH_", "REDIS_URL", "INNGEST_", "OPENAI_", "TRIPKIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(stack.env)
    csv = tmp_path / "runs.csv"
    result = subprocess.run(
        [sys.executable, "-m", "tripkit.usage", "harvest", str(csv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("harvested ") and csv.exists()
    assert stack.rest_token not in result.stdout + result.stderr


# --------------------------------------------------------------------------- records and history


def test_generations_table_from_a_record() -> None:
    row = usage.generations_table([_record("a" * 32)]).iloc[0]
    assert row["status"] == "completed"
    assert row["duration_s"] == 300 and row["time_to_first_summary_s"] == 60
    assert row["bundles"] == 2 and row["steps"] == 4 and row["model_calls"] == 3
    assert row["retries"] == 2 and row["attempts_total"] == 6
    assert row["prompt_tokens"] == 1000 and row["completion_tokens"] == 900
    assert row["models"] == "gpt-4o-mini"


def test_a_failed_runs_record_has_gaps_not_errors() -> None:
    failed = RunRecord.model_validate(
        {
            "sessionId": "b" * 32,
            "runId": "01FAIL",
            "failedAt": "2026-06-01T10:00:09+00:00",
            "status": "failed",
            "error": "Generation failed: the model API answered 401.",
        }
    )
    table = usage.generations_table([failed])
    row = table.iloc[0]
    assert row["status"] == "failed" and math.isnan(row["duration_s"])
    estimated = usage._estimates(table, 2.0, 0).iloc[0]
    assert estimated["executions_min"] == 3  # the failed run + the on_failure run and its step


def test_harvest_dedups_by_session_id(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    first = _record("a" * 32, status="running", completedAt=None)
    usage.harvest([first, _record("b" * 32)], csv)
    history = usage.harvest([_record("a" * 32), _record("c" * 32)], csv)
    assert sorted(history["session_id"]) == ["a" * 32, "b" * 32, "c" * 32]
    assert history.set_index("session_id").loc["a" * 32, "status"] == "completed"
    again = usage.read_history(csv)
    assert len(again) == 3
    assert str(again["queued_at"].dtype).startswith("datetime64")
    assert again.set_index("session_id").loc["a" * 32, "duration_s"] == 300
    assert not list(tmp_path.glob(".runs.csv.*"))  # the atomic write left no temp file
    umask = os.umask(0)
    os.umask(umask)
    assert csv.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_read_history_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="No history CSV"):
        usage.read_history(tmp_path / "nope.csv")


def test_inngest_runs_envelopes() -> None:
    run = {
        "run_id": "01R",
        "status": "Completed",
        "run_started_at": "2026-06-01T10:00:00Z",
        "ended_at": "2026-06-01T10:05:00Z",
        "steps": [{"name": "plan", "attempts": 1}, {"name": "bundle-0", "attempts": 3}],
    }
    cloud = {"run_id": "01C", "status": "Completed", "run_started_at": "2026-06-01T11:00:00Z"}
    table = usage.inngest_runs_table([{"data": [run]}, {"data": cloud, "metadata": {}}])
    assert list(table["run_id"]) == ["01R", "01C"]
    assert table.iloc[0]["executions_min"] == 3 and table.iloc[0]["executions_worst"] == 5
    assert math.isnan(table.iloc[1]["executions_min"])  # Inngest Cloud gives no steps


def test_upstash_stats_fields() -> None:
    stats = usage.upstash_stats(
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


# --------------------------------------------------------------------------- plans


def test_plan_profiles_match_plan_limits_doc() -> None:
    guide, current = usage.plan("guide"), usage.plan("current")
    assert guide.value("redis_commands_per_day") == 10_000
    assert guide.value("redis_storage_bytes") == 256 * 2**20
    assert guide.value("inngest_runs_per_month") == 1_000
    assert guide.value("inngest_steps_per_month") == 100_000
    assert guide.value("redis_usd_per_100k_commands") == 0.20
    assert current.value("redis_commands_per_month") == 500_000
    assert current.value("redis_storage_bytes") == 256 * 2**20
    assert current.value("redis_bandwidth_bytes_per_month") == 10 * 2**30
    assert current.value("redis_usd_per_100k_commands") == 0.20
    assert current.value("inngest_executions_per_month") == 50_000
    assert current.value("inngest_concurrent_steps") == 5
    assert current.value("inngest_events_per_month") == 500_000
    assert "2026-06-18" in current.cite("redis_commands_per_month")
    prices = usage.openai_prices()
    assert (prices["gpt-4o-mini"]["input"], prices["gpt-4o-mini"]["output"]) == (0.15, 0.60)
    assert (prices["gpt-5.4-mini"]["input"], prices["gpt-5.4-mini"]["output"]) == (0.75, 4.50)


def test_every_number_has_a_source_and_a_date() -> None:
    data = usage.load_plans()
    for profile in data["profiles"].values():
        for entry in profile["limits"].values():
            assert entry["source"] and entry["date"] and entry["label"] and entry["unit"]
            assert isinstance(entry["value"], int | float)
    for price in data["openai"]["models"].values():
        assert price["source"] and price["date"]


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(usage.UsageError, match="Known profiles: guide, current"):
        usage.plan("nosuch")


# --------------------------------------------------------------------------- pure computations


@pytest.mark.parametrize(
    ("duration", "interval", "polls"),
    [(0, 2, 1), (10, 2, 6), (10.5, 2, 7), (360, 2, 181), (360, 10, 37), (math.nan, 2, 0)],
)
def test_polls_per_generation(duration: float, interval: float, polls: int) -> None:
    assert usage.polls_per_generation(duration, interval) == polls


def test_redis_commands_per_generation() -> None:
    # The local stack's demo: 3 bundles, 29 polls -> 7 SET + 30 GET (measured).
    parts = usage.redis_commands_per_generation(3, 29)
    assert parts == {
        "create": 1,
        "writes": 5,
        "worker_reads": 1,
        "run_record": 1,
        "polls": 29,
        "total": 37,
    }
    # A global database with 2 read regions bills each write 3 times; reads once.
    assert usage.redis_commands_per_generation(3, 29, read_regions=2)["total"] == 21 + 30
    # Failed after 1 summary: running, 1 summary, fail = GET + SET, plus the usual.
    failed = usage.redis_commands_per_generation(0, 4, failed=True, summaries=1)
    assert failed["writes"] == 3 and failed["worker_reads"] == 2 and failed["total"] == 11


def test_free_tier_fit_hand_computed() -> None:
    per = usage.PerGeneration(bundles=3, duration_s=360, retries=0)
    # 2 s: 181 polls + 8 others = 189 commands; 5 steps, 6 executions.
    guide = usage.free_tier_fit(usage.plan("guide"), per, 2.0)
    assert guide["redis_commands_per_generation"] == 189
    assert guide["redis_bound_per_day"] == 52  # 10,000 / 189
    assert guide["inngest_bound_per_day"] == 33  # 1,000 runs / 30 days
    assert guide["fits_per_day"] == 33
    current = usage.free_tier_fit(usage.plan("current"), per, 2.0)
    assert current["redis_bound_per_day"] == 88  # 500,000 / 30 / 189
    assert current["inngest_bound_per_day"] == 277  # 50,000 / 30 / 6
    assert current["fits_per_day"] == 88
    # 10 s: 37 polls + 8 = 45 commands.
    slow = usage.free_tier_fit(usage.plan("current"), per, 10.0)
    assert slow["redis_bound_per_day"] == 370 and slow["fits_per_day"] == 277
    # Retried attempts are budgeted: one retry per generation -> 7 executions.
    retried = usage.PerGeneration(bundles=3, duration_s=360, retries=1)
    assert usage.free_tier_fit(usage.plan("current"), retried, 2.0)["inngest_bound_per_day"] == 238


def test_projected_monthly_cost_hand_computed() -> None:
    per = usage.PerGeneration(bundles=3, duration_s=360, retries=0, usd_openai=0.01)
    table = usage.projected_monthly_cost(usage.plan("current"), per, 1000, 2.0).set_index("item")
    # 189 x 1000 x 30 = 5.67M commands; 5.17M past 500K at $0.20 / 100K = $10.34.
    assert table.loc["commands", "monthly"] == 5_670_000
    assert table.loc["commands", "cost_usd"] == pytest.approx(10.34)
    assert table.loc["tokens (USD at list price)", "cost_usd"] == pytest.approx(300)
    assert math.isnan(table.loc["executions (retries counted)", "cost_usd"])  # no price known
    guide = usage.projected_monthly_cost(usage.plan("guide"), per, 100, 2.0).set_index("item")
    # Daily limit: 18,900 - 10,000 = 8,900 a day past it, x 30 = 267,000 -> $0.534.
    assert guide.loc["commands", "beyond_free"] == 267_000
    assert guide.loc["commands", "cost_usd"] == pytest.approx(0.534)
    assert guide.loc["runs", "cost_usd"] == 20  # 3,000 runs: the $20 plan


def test_cost_by_model_hand_computed() -> None:
    records = [
        _record("a" * 32, usage=[{"model": "gpt-4o-mini", "promptTokens": 10**6}]),
        _record(
            "b" * 32,
            usage=[
                {"model": "gpt-4o-mini", "completionTokens": 10**6},
                {"model": "gpt-5.4-mini", "promptTokens": 200_000, "completionTokens": 100_000},
            ],
        ),
    ]
    table, notes = usage.tokens_by_model(usage.generations_table(records), usage.openai_prices())
    costs = table.set_index("model")["cost_usd"]
    assert costs["gpt-4o-mini"] == pytest.approx(0.15 + 0.60)
    assert costs["gpt-5.4-mini"] == pytest.approx(0.2 * 0.75 + 0.1 * 4.50)
    assert notes == []


def test_unknown_model_costs_nan_with_a_note() -> None:
    records = [_record("a" * 32, usage=[{"model": "my-finetune", "promptTokens": 5}])]
    table, notes = usage.tokens_by_model(usage.generations_table(records), usage.openai_prices())
    assert math.isnan(table.set_index("model").loc["my-finetune", "cost_usd"])
    assert len(notes) == 1 and "my-finetune" in notes[0]
    assert math.isnan(usage.token_cost("my-finetune", 1, 1, usage.openai_prices()))


def test_peak_concurrency_and_observed_rate() -> None:
    records = [
        _record("a" * 32),
        _record("b" * 32, startedAt="2026-06-01T10:04:00+00:00"),  # overlaps a
        _record(
            "c" * 32,
            queuedAt="2026-06-01T11:00:00+00:00",
            startedAt="2026-06-01T11:00:00+00:00",
            completedAt="2026-06-01T11:01:00+00:00",
        ),
    ]
    table = usage.generations_table(records)
    assert usage.peak_concurrency(table) == 2
    end = usage._parse_end("2026-06-01")  # the end of that day
    assert usage.observed_rate(table, 30, end) == 3.0  # less than a day of data: per 1 day
    assert usage.observed_rate(table.iloc[:0], 30, end) == 0.0


# --------------------------------------------------------------------------- the report object


async def test_report_with_no_generations_says_so(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    usage.harvest([], csv)
    report = await usage.build_report(data_source="csv", history_csv=csv, env_dir=tmp_path)
    assert "No generations in the period" in report.header()
    for name in ("generations_summary", "timing", "tokens_table", "plot_durations", "plot_tokens"):
        assert "No generations in the period" in str(getattr(report, name)())
    # Still: the limits, the per-generation breakdown and the fit table (assumed typical).
    assert "10,000 per day" in repr(report.limits_table())
    assert "client polls" in repr(report.redis_per_generation())
    assert len(report.free_tier_fit().frame) == 2 * len(usage.POLL_INTERVALS)
    assert report.plot_commands_per_day().png().startswith(b"\x89PNG")
    assert "set generations_per_day" in report.notes()


async def test_report_from_records(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    usage.harvest([_record("a" * 32), _record("b" * 32, status="failed")], csv)
    report = await usage.build_report(
        data_source="csv",
        history_csv=csv,
        plan_profile="guide",
        period_end="2026-06-02",
        generations_per_day=100,
    )
    assert report.plan.name == "guide" and [p.name for p in report.plans] == ["guide", "current"]
    assert "2 generations in the period" in report.header()
    assert "100.0 generations/day" in report.header()
    vs = report.usage_vs_limits().frame
    assert set(vs.index.get_level_values("profile")) == {"guide", "current"}
    assert report.tokens_table().frame.loc["gpt-4o-mini", "calls"] == "6"  # type: ignore[union-attr]
    assert report.plot_tokens().png().startswith(b"\x89PNG")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("data_source", "s3", "data_source"),
        ("poll_interval", 0, "poll_interval"),
        ("period_end", "yesterday", "period_end"),
        ("read_regions", -1, "read_regions"),
    ],
)
async def test_build_report_rejects_bad_parameters(
    tmp_path: Path, name: str, value: Any, message: str
) -> None:
    csv = tmp_path / "runs.csv"
    usage.harvest([], csv)
    params: dict[str, Any] = {"data_source": "csv", "history_csv": csv, name: value}
    with pytest.raises(usage.UsageError, match=message):
        await usage.build_report(**params)
