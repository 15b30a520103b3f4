"""The usage report's HTML (``reports/usage-*.html``) as a manager opens it: in a browser."""

from __future__ import annotations

from typing import Any

from browser.screens import ROOT, shot


def test_the_example_report_opens_with_its_verdict(page: Any) -> None:
    report = max((ROOT / "reports").glob("usage-*.html"))
    page.goto(report.as_uri())
    page.locator("h1").first.wait_for()
    shot(page, "report-top", full_page=False)  # what a manager sees first
    shot(page, "report-full")
    assert "usage report" in page.locator("h1").first.inner_text().lower()
    assert page.locator("table").count() >= 3 and page.locator("img").count() >= 1
    verdict = page.locator("h1, h2, h3").get_by_text("Verdict")
    assert verdict.count() >= 1
    # the verdict comes before any table: a manager reads it first
    verdict_y = verdict.first.bounding_box()["y"]
    assert verdict_y < page.locator("table").first.bounding_box()["y"]
