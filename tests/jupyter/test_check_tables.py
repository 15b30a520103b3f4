"""tripkit.jupyter.check_tables: the check results as notebook 01 shows them: escaped,
marked with a word and a colour, headers aligned with their text."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tripkit import checks
from tripkit.checks import CheckResult, CheckStatus
from tripkit.jupyter.check_tables import MARK_COLOURS, mark, show_checks, show_diagnoses, verdict


def result(status: CheckStatus, detail: str = "measured", remedy: str = "") -> CheckResult:
    return CheckResult(
        id=f"config.{status.value}",
        step=checks.CONFIGURATION,
        title="a check",
        status=status,
        detail=detail,
        remedy=remedy,
        elapsed_ms=1.0,
    )


def test_every_text_is_escaped() -> None:
    remedy = "Copy the key (it looks like signkey-<env>-<hex>) & paste it."
    page = show_checks([result(CheckStatus.FAIL, "<b>not bold</b>", remedy)])._repr_html_()
    assert "signkey-&lt;env&gt;-&lt;hex&gt;" in page
    assert "&amp; paste" in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>" not in page


def test_marks_are_words_on_colours_not_emoji() -> None:
    results = [result(status) for status in CheckStatus]
    page = show_checks(results)._repr_html_()
    for status in CheckStatus:
        badge = mark(status)
        assert badge in page
        assert f">{status.value.upper()}</span>" in badge
        assert f"background-color:{MARK_COLOURS[status]}" in badge
    assert not re.search("[\u2600-\u27bf\U0001f300-\U0001faff]", page), "an emoji is left"
    assert len(set(MARK_COLOURS.values())) == len(CheckStatus)


def test_headers_are_left_aligned_like_their_text() -> None:
    page = show_checks([result(CheckStatus.PASS)])._repr_html_()
    headers = re.findall(r'<th style="([^"]*)">([^<]*)</th>', page)
    assert [name for _, name in headers] == ["check", "status", "detail", "remedy"]
    assert all("text-align:left" in style for style, _ in headers)
    assert all("text-align:left" in s for s in re.findall(r'<td style="([^"]*)"', page))


def test_the_plain_text_form_is_the_verdict() -> None:
    results = [result(CheckStatus.PASS), result(CheckStatus.FAIL, remedy="fix it")]
    assert repr(show_checks(results)) == verdict(results) == "pass  config.pass\nfail  config.fail"


async def test_an_unconfigured_step_as_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("UPSTASH_", "REDIS_URL", "INNGEST_", "OPENAI_", "TRIPKIT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INNGEST_SIGNING_KEY", "not-a-signing-key")
    ids = dict(checks.GUIDE_STEPS)[checks.CONFIGURATION]
    results = await checks.check_environment(tmp_path, only=ids)
    assert any(r.status is CheckStatus.FAIL for r in results)

    lines = verdict(results).splitlines()
    assert [line.split() for line in lines] == [[r.status.value, r.id] for r in results]
    table = show_checks(results)
    assert table.columns == ["check", "status", "detail", "remedy"]
    page = table._repr_html_()
    assert mark(CheckStatus.FAIL) in page and all(r.id in page for r in results)
    # the detail naming the signing key's format reads literally
    assert "signkey-&lt;env&gt;-&lt;hex&gt;" in page

    diagnoses = show_diagnoses(results)
    assert diagnoses.columns == ["entry", "applies", "failing checks", "advice"]
    assert len(diagnoses.rows) == len(checks.diagnose(results))
    applying = [d for d in checks.diagnose(results) if d.applies]
    assert diagnoses._repr_html_().count(mark(CheckStatus.FAIL, "APPLIES")) == len(applying)


def test_notebook_01s_legend_shows_the_badges_the_tables_show() -> None:
    notebook = Path(__file__).parents[2] / "notebooks" / "01_setup_walkthrough.ipynb"
    intro = "".join(json.loads(notebook.read_text())["cells"][0]["source"])
    for status in CheckStatus:
        assert f"| {mark(status)} |" in intro, status
    assert not any(emoji in intro for emoji in ("✅", "⚠", "❌", "⏭"))
