"""tripkit.usage.runner: `tripkit report` as cron runs it: a real subprocess running the
notebook with papermill, then the dated notebook and its code-free HTML; failures are one
clear line, exit 2."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from helpers import run_cli

from tripkit.usage.runner import ReportError, parse_value, report_paths, run_report

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CSV = ROOT / "reports" / "data" / "example-runs.csv"


def report(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tripkit report ARGS``, without the caller's service variables."""
    return run_cli("report", *args, cwd=cwd, timeout=180)


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, str]:
    """A copy of the example history and the day its generations ran (the period's end)."""
    csv = tmp_path / "runs.csv"
    shutil.copy(EXAMPLE_CSV, csv)
    last = pd.read_csv(csv)["queued_at"].dropna().max()
    return csv, str(pd.Timestamp(last).date())


def test_report_makes_a_dated_notebook_and_code_free_html(
    tmp_path: Path, history: tuple[Path, str]
) -> None:
    csv, day = history
    out = tmp_path / "out"
    result = report(
        "--output-dir",
        str(out),
        "-p",
        "data_source",
        "csv",
        "-p",
        "history_csv",
        str(csv),
        "-p",
        "period_end",
        day,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    today = datetime.now(UTC).date()
    notebook, html = (Path(line) for line in result.stdout.splitlines())
    assert notebook == out / f"usage-{today:%Y-%m-%d}.ipynb" and notebook.exists()
    assert html == out / f"usage-{today:%Y-%m-%d}.html" and html.exists()
    assert result.stderr == ""  # cron mails nothing on success
    assert not list(out.glob(".*partial*")) and not list(out.glob("*.failed.ipynb"))

    page = html.read_text()
    # No code: no input areas, no source of the cells.
    assert "jp-InputArea" not in page and 'class="input' not in page
    assert "build_report" not in page and "report_parameters" not in page
    # The tables are there: limits (guide beside current), the fit table, the breakdown.
    assert page.count("<table") >= 8
    for text in (
        "10,000 per day",
        "500,000 per month",
        "What fits the free tier",
        "client polls",
        "generations in the period",
        "gpt-5.4-mini",
    ):
        assert text in page, text
    # The verdict opens the page, before the details.
    assert (
        0
        < page.index(">Verdict<")
        < page.index("What this report covers")
        < page.index("What fits the free tier")
    )
    assert "each cell below" not in page
    assert "No generations in the period" not in page
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"sk-[A-Za-z0-9-]{8,}", page + notebook.read_text())


def test_a_broken_parameter_fails_with_one_clear_line(
    tmp_path: Path, history: tuple[Path, str]
) -> None:
    csv, _ = history
    out = tmp_path / "out"
    result = report(
        "--output-dir",
        str(out),
        "-p",
        "data_source",
        "csv",
        "-p",
        "history_csv",
        str(csv),
        "-p",
        "plan_profile",
        "nosuch",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "Unknown plan profile 'nosuch'" in result.stderr
    assert "Known profiles: guide, current" in result.stderr
    assert not list(out.glob("*.html"))
    assert len(list(out.glob("usage-*.failed.ipynb"))) == 1  # kept for debugging


def test_an_unknown_parameter_is_refused_before_running(tmp_path: Path) -> None:
    result = report("--output-dir", str(tmp_path), "-p", "plan", "guide", cwd=tmp_path)
    assert result.returncode == 2
    assert "Unknown report parameter(s): plan." in result.stderr
    assert "plan_profile" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("usage-*"))


def test_a_cell_timeout_is_a_failure(tmp_path: Path) -> None:
    # A notebook whose cell certainly outlasts the timeout. Papermill marks the notebook
    # "completed" after a timeout; the error must still surface.
    slow = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]  # nbformat is untyped
    params = nbformat.v4.new_code_cell("data_source = 'csv'")  # type: ignore[no-untyped-call]
    params.metadata["tags"] = ["parameters"]
    sleeper = nbformat.v4.new_code_cell("import time\ntime.sleep(30)")  # type: ignore[no-untyped-call]
    slow.cells = [params, sleeper]
    slow.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook = tmp_path / "slow.ipynb"
    nbformat.write(slow, notebook)  # type: ignore[no-untyped-call]
    out = tmp_path / "out"
    with pytest.raises(ReportError, match="did not finish: CellTimeoutError"):
        run_report(out, parameters={"data_source": "csv"}, timeout=2, notebook=notebook)
    assert not list(out.glob("*.html"))


def test_same_day_reports_get_a_suffix_unless_overwritten(tmp_path: Path) -> None:
    day = date(2026, 6, 1)
    first = report_paths(tmp_path, day)
    assert first.notebook.name == "usage-2026-06-01.ipynb"
    first.notebook.write_text("{}")
    assert report_paths(tmp_path, day).notebook.name == "usage-2026-06-01-2.ipynb"
    (tmp_path / "usage-2026-06-01-2.html").write_text("")
    assert report_paths(tmp_path, day).html.name == "usage-2026-06-01-3.html"
    assert report_paths(tmp_path, day, overwrite=True) == first


@pytest.mark.parametrize(
    ("text", "value"),
    [("True", True), ("False", False), ("None", None), ("7", 7), ("2.5", 2.5), ("csv", "csv")],
)
def test_parameter_values_parse_like_papermill(text: str, value: object) -> None:
    assert parse_value(text) == value and type(parse_value(text)) is type(value)
