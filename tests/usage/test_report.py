"""tripkit.usage.build and tripkit.usage.report: the report object notebook 03 shows,
built from a CSV history: empty, from records, and refusing bad parameters."""

from __future__ import annotations

import re
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
    modes = report.poll_vs_push().frame
    assert modes.loc[("current", "push"), "generations / month that fit"] == "8,333"
    assert modes.loc[("current", "poll"), "bound by"] == "Redis"
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
    assert report.tokens_table().frame.loc["gpt-4o-mini", "model calls"] == "4"  # type: ignore[union-attr]
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


# --- what a manager reads: the verdict, the headers, the charts --------------------------------


async def _from_records(tmp_path: Path, **params: Any) -> Any:
    csv = tmp_path / "runs.csv"
    harvest([run_record("a" * 32), run_record("b" * 32, status="failed")], csv)
    return await build_report(data_source="csv", history_csv=csv, period_end="2026-06-02", **params)


async def test_the_verdict_says_it_fits_which_limit_binds_first_and_when(
    tmp_path: Path,
) -> None:
    report = await _from_records(tmp_path, plan_profile="current", generations_per_day=10)
    lines = report.verdict().splitlines()
    assert lines[0] == "## Verdict"
    text = "\n".join(lines)
    # 10 a day: 49,650 of the 500,000 Redis commands a month (the polls of 300 s runs)
    assert "**Yes: the usage fits the free tiers.** At 10.0 generations a day" in text
    assert "- **Binds first:** Redis commands per month: 49,650 of 500,000 (9.9%)." in text
    assert "- **When:** not at this rate: a month uses 9.9% of it." in text
    assert "reached at about 101 generations a day (10.1 times today's volume)" in text
    assert "- **Under profile `guide`:** fits; Inngest runs per month binds first (45%)." in text
    assert "OpenAI** has no free tier" in text


async def test_the_verdict_dates_a_monthly_limit_that_is_used_up(tmp_path: Path) -> None:
    report = await _from_records(tmp_path, plan_profile="guide", generations_per_day=100)
    text = report.verdict()
    assert "**No: the usage does not fit the free tiers.**" in text
    assert "- **Binds first:** Inngest runs per month: 4,500 of 1,000 (450%)." in text
    # 1,000 runs at 150 a day last 6.7 days: used up on day 7 of the month after the period
    assert "- **When:** on day 7 of each month at this rate: in July 2026, on 2026-07-07." in text


async def test_the_verdict_without_generations_gives_the_capacity(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    harvest([], csv)
    report = await build_report(data_source="csv", history_csv=csv, env_dir=tmp_path)
    text = report.verdict()
    assert text.startswith("## Verdict\n")
    assert "No generations to measure" in text
    assert "carry about 84 generations a day (the Redis limit binds first)" in text


async def test_tables_have_human_headers(tmp_path: Path) -> None:
    report = await _from_records(tmp_path, generations_per_day=10)
    tables = [
        report.usage_vs_limits(),
        report.timing(),
        report.tokens_table(),
        report.projected_cost(),
        report.free_tier_fit(),
        report.redis_per_generation(),
    ]
    names: list[str] = []
    for table in tables:
        frame = table.frame
        names += [str(c) for c in frame.columns] + [str(n) for n in frame.index.names]
    code_style = [n for n in names if "_" in n or n in ("n", "p50", "p90", "item", "monthly")]
    assert code_style == []
    assert list(report.tokens_table().frame.columns) == [
        "model calls",
        "input tokens",
        "output tokens",
        "cost (list price)",
        "cost per generation",
    ]
    page = report.usage_vs_limits()._repr_html_()
    assert re.search(r"#T_\w+ th \{\s*text-align: left;", page)  # headers over their text
    assert re.search(r"#T_\w+ td.col3 \{\s*text-align: left;", page)  # "yes": words
    assert "td.col0" not in page  # numbers stay right-aligned
    assert page == report.usage_vs_limits()._repr_html_()  # the same HTML each time


async def test_charts_are_large_and_linear(tmp_path: Path) -> None:
    report = await _from_records(tmp_path, generations_per_day=10)
    chart = report.plot_commands_per_day()
    assert chart.figure.get_size_inches()[0] * chart.figure.dpi >= 1000
    [ax] = chart.figure.axes
    assert ax.get_yscale() == "linear"
    # the guide's 10,000 a day is far above two days' commands: named, not drawn
    assert "far above this scale" in " ".join(t.get_text() for t in ax.texts)
    assert chart.png().startswith(b"\x89PNG")
