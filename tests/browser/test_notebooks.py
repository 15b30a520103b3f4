"""Notebooks 01 and 02 in JupyterLab, in Chromium, as ops open them after ``make lab``."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from browser.conftest import Lab
from browser.screens import REPORT, run_all, shot
from tripkit.errors import RedisAuthError

pytestmark = pytest.mark.timeout(240)  # the first test also starts the stack and JupyterLab

PANEL = ".tripkit-panel"
#: The panel's state in one read: summaries listed, the status line, the button.
SNAPSHOT = """() => {
  const panel = document.querySelector('.tripkit-panel');
  if (!panel) return null;
  const items = panel.querySelectorAll('ol li').length;
  if (items < 1) return null;
  const button = [...panel.querySelectorAll('button')]
    .find((b) => b.textContent.includes('Generate Bundles'));
  return {text: panel.innerText, items, disabled: button.disabled};
}"""


def _find(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in {text!r}"
    return found


def _panel_text(page: Any) -> str:
    return str(page.locator(PANEL).inner_text())


def test_notebook_02_generates_shows_summaries_then_bundles_and_restores(
    page: Any, local_lab: Lab
) -> None:
    page.goto(local_lab.url("02_generate_bundles.ipynb"))
    page.locator(".jp-Notebook").wait_for()
    run_all(page)
    generate = page.locator(PANEL).get_by_role("button", name="Generate Bundles")
    generate.wait_for(timeout=90_000)
    shot(page, "02-form-after-run-all")

    clicked = time.monotonic()
    generate.click()
    first = page.wait_for_function(SNAPSHOT, timeout=60_000).json_value()
    seconds = time.monotonic() - clicked
    REPORT.append(f"notebook 02: click -> first summary in the browser: {seconds:.2f} s")
    shot(page, "02-first-summary")
    done, total = map(int, _find(r"(\d+) of (\d+) summaries", first["text"]).groups())
    assert 1 <= done < total, first["text"]  # seen while the run was still going
    assert first["disabled"] is True  # no second run while this one is followed

    # Run All again mid-run: the panel and the session it follows are kept.
    run_all(page)
    page.locator(PANEL).get_by_text("The bundles").wait_for(timeout=60_000)
    text = _panel_text(page)
    assert f"{total} of {total} summaries" in text and "completed" in text
    assert "summary 3 written" in text and "The run's timeline" in text
    assert page.locator(f"{PANEL} table").count() == 2  # the bundles and the timeline
    assert not generate.is_disabled()
    session_id = _find(r"Session ([0-9a-f]{32})", text).group(1)
    shot(page, "02-completed")

    # An empty restore box says what to type; the stale results are gone.
    box = page.locator(f"{PANEL} input[placeholder='a sessionId to restore']")
    box.fill("")
    page.locator(PANEL).get_by_role("button", name="Restore session").click()
    page.locator(PANEL).get_by_text("Type or paste a sessionId").wait_for()
    assert page.locator(f"{PANEL} table").count() == 0 and "Not Found" not in _panel_text(page)

    box.fill(session_id)
    page.locator(PANEL).get_by_role("button", name="Restore session").click()
    page.locator(PANEL).get_by_text("The bundles").wait_for()
    text = _panel_text(page)
    assert f"Session {session_id}: completed" in text and text.count("\n") > 10
    assert page.locator(f"{PANEL} ol li").count() == total
    shot(page, "02-restored")


def test_notebook_02_follows_by_push_showing_a_summary_before_the_end(
    page: Any, local_lab: Lab
) -> None:
    page.goto(local_lab.url("02_generate_bundles.ipynb"))
    page.locator(".jp-Notebook").wait_for()
    run_all(page)
    panel = page.locator(PANEL)
    generate = panel.get_by_role("button", name="Generate Bundles")
    generate.wait_for(timeout=90_000)
    push = panel.get_by_role("button", name="push", exact=True)
    push.click()
    clicked = time.monotonic()
    generate.click()
    first = page.wait_for_function(SNAPSHOT, timeout=60_000).json_value()
    seconds = time.monotonic() - clicked
    REPORT.append(f"notebook 02 by push: click -> first summary in the browser: {seconds:.2f} s")
    shot(page, "02-push-first-summary")
    done, total = map(int, _find(r"(\d+) of (\d+) summaries", first["text"]).groups())
    assert 1 <= done < total, first["text"]  # seen while the run was still going
    assert first["disabled"] is True and push.is_disabled()  # no mode change mid-run
    panel.get_by_text("The bundles").wait_for(timeout=60_000)
    text = _panel_text(page)
    assert f"{total} of {total} summaries" in text and "summary 3 written" in text
    assert page.locator(f"{PANEL} ol li").count() == total
    assert page.locator(f"{PANEL} table").count() == 2 and not push.is_disabled()
    shot(page, "02-push-completed")


def test_notebook_02_names_the_field_to_fix(page: Any, local_lab: Lab) -> None:
    page.goto(local_lab.url("02_generate_bundles.ipynb"))
    page.locator(".jp-Notebook").wait_for()
    run_all(page)
    generate = page.locator(PANEL).get_by_role("button", name="Generate Bundles")
    generate.wait_for(timeout=90_000)
    budget = page.locator(f"{PANEL} input[type='number']")
    budget.fill("2000000")
    budget.press("Enter")
    generate.click()
    page.locator(PANEL).get_by_text("Check the form").wait_for()
    text = _panel_text(page)
    # under the Budget row, naming the range; the value is not quietly changed
    assert "The budget must be more than 0 and at most 1,000,000." in text
    assert budget.input_value() == "2000000"
    assert "validation" not in text and "Session " not in text
    shot(page, "02-field-error")


def test_notebook_01_shows_a_wrong_upstash_token_and_its_remedy(page: Any, real_lab: Lab) -> None:
    page.goto(real_lab.url("01_setup_walkthrough.ipynb"))
    page.locator(".jp-Notebook").wait_for()
    # the legend shows the tables' badges: the word on its colour, kept by the sanitizer
    legend = page.locator(".jp-RenderedMarkdown span", has_text=re.compile(r"^FAIL$")).first
    colour = legend.evaluate("(e) => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(207, 34, 46)", colour  # MARK_COLOURS[FAIL], #cf222e
    run_all(page)
    # the last cell's table: every check before it has run
    page.get_by_text("Session not found").first.wait_for(timeout=90_000)
    # text_content: JupyterLab lays out only the cells near the viewport
    rows = page.locator("tr", has_text="upstash.ping")
    texts = [
        " | ".join(rows.nth(index).locator("td, th").all_text_contents())
        for index in range(rows.count())
    ]
    remedy = RedisAuthError.remedy.split(":")[0]  # "Check the Upstash credentials"
    failing = [t for t in texts if re.search(r"\bfail\b", t, re.I) and "401" in t]
    assert failing and remedy in failing[0], texts
    rows.first.scroll_into_view_if_needed()
    shot(page, "01-real-wrong-token")
