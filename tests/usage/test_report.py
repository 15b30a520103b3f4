"""tripkit.usage.build and tripkit.usage.report: the report object notebook 03 shows,
built from a CSV history: empty, from records, and refusing bad parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import run_record

from tripkit.usage.build import build_report
from tripkit.usage.history import harvest
from tripkit.usage.plans import UsageError
from tripkit.usage.projections import POLL_INTERVALS


async def test_report_with_no_generations_says_so(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    harvest([], csv)
    report = await build_report(data_source="csv", history_csv=csv, env_dir=tmp_path)
    assert "No generations in the period" in report.header()
    for name in ("generations_summary", "timing", "tokens_table", "plot_durations", "plot_tokens"):
        assert "No generations in the period" in str(getattr(report, name)())
    # Still: the limits, the per-generation breakdown and the fit table (assumed typical).
    assert "10,000 per day" in repr(report.limits_table())
    assert "client polls" in repr(report.redis_per_generation())
    assert len(report.free_tier_fit().frame) == 2 * len(POLL_INTERVALS)
    assert report.plot_commands_per_day().png().startswith(b"\x89PNG")
    assert "set generations_per_day" in report.notes()


async def test_report_from_records(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    harvest([run_record("a" * 32), run_record("b" * 32, status="failed")], csv)
    report = await build_report(
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
    harvest([], csv)
    params: dict[str, Any] = {"data_source": "csv", "history_csv": csv, name: value}
    with pytest.raises(UsageError, match=message):
        await build_report(**params)
