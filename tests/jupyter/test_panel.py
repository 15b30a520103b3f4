"""tripkit.jupyter.panel: its pure views, and the panel driving the real stack."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest
from helpers import ModelControl

from tripkit import sessions
from tripkit.config import Settings, load_settings
from tripkit.devstack.stack import LocalStack
from tripkit.errors import ConfigError
from tripkit.jupyter.panel import (
    RESTORE_HINT,
    GenerationPanel,
    bundles_frame,
    summaries_html,
    timeline_frame,
)
from tripkit.jupyter.targets import Target
from tripkit.models import Bundle, Preferences, RunRecord, Session, Status, Summary

PREFS = Preferences(interests=["food"], trip_length_days=3, budget=900, bundle_count=2)
SID = "0123456789abcdef0123456789abcdef"


def test_summaries_are_escaped_and_listed_in_order() -> None:
    s = sessions.new(SID, PREFS)
    assert "No summaries yet" in summaries_html(s)
    s = sessions.add_summary(s, Summary(index=1, title="<b>x</b>", destination="Oslo", text="t"))
    s = sessions.add_summary(s, Summary(index=0, title="First", destination="Bergen", text="t"))
    html = summaries_html(s)
    assert html.index("First") < html.index("&lt;b&gt;x&lt;/b&gt;") and "<b>x</b>" not in html


def test_bundles_and_timeline_frames() -> None:
    s = sessions.start(sessions.new(SID, PREFS))
    t0 = s.created_at
    s = sessions.complete(
        s,
        [
            Bundle(
                index=0,
                title="A",
                destination="Oslo",
                country="Norway",
                nights=2,
                estimated_cost=812.4,
            )
        ],
        now=t0 + timedelta(seconds=9),
    )
    frame = bundles_frame(s)
    assert frame.loc[1, "destination"] == "Oslo, Norway" and frame.loc[1, "cost"] == 812
    record = RunRecord(
        session_id=s.session_id,
        status=Status.COMPLETED,
        summary_at=[t0 + timedelta(seconds=2), t0 + timedelta(seconds=5)],
    )
    timeline = timeline_frame(s, record)
    assert list(timeline["event"]) == [
        "queued (sessionId returned)",
        "started",
        "summary 1 written",
        "summary 2 written",
        "completed",
    ]
    assert list(timeline["seconds"])[-3:] == [2.0, 5.0, 9.0]


def _stack_settings(stack: LocalStack) -> Settings:
    return load_settings(
        os.devnull,
        upstash_redis_rest_url=stack.rest_url,
        upstash_redis_rest_token=stack.rest_token,
        redis_transport="rest",
    )


def test_form_errors_are_plain_words_under_their_field() -> None:
    panel = GenerationPanel("http://127.0.0.1:9")
    panel.interests.value = []
    panel.notes.value = "x" * 1001
    assert asyncio.run(panel.generate()) is None
    assert "Add at least one interest" in panel.field_errors["interests"].value
    assert "At most 1,000 characters" in panel.field_errors["notes"].value
    assert "Check the form" in panel.status.value
    assert "validation" not in panel.status.value and "List should" not in panel.status.value


@pytest.mark.parametrize("budget", [0, -5, 2_000_000])
def test_a_budget_out_of_range_is_an_error_naming_the_range_never_clamped(budget: float) -> None:
    panel = GenerationPanel("http://127.0.0.1:9")
    panel.budget.value = budget
    assert asyncio.run(panel.generate()) is None
    assert panel.budget.value == budget
    message = "The budget must be more than 0 and at most 1,000,000."
    assert panel.field_errors["budget"].value.endswith(f"{message}</span>")


def test_exact_dates_that_end_before_they_start_are_named() -> None:
    panel = GenerationPanel("http://127.0.0.1:9")
    panel.use_dates.value = True
    assert panel.length.layout.display == "none" and panel.start_date.layout.display is None
    panel.end_date.value = panel.start_date.value - timedelta(days=1)
    assert asyncio.run(panel.generate()) is None
    assert "The end date must be on or after the start date." in panel.field_errors["trip"].value


def test_an_empty_restore_box_says_what_to_type() -> None:
    panel = GenerationPanel("http://127.0.0.1:9")
    assert asyncio.run(panel.restore("  ")) is None
    assert panel.status.value == RESTORE_HINT


async def test_the_panel_generates_and_restores_on_the_stack(stack: LocalStack) -> None:
    panel = GenerationPanel(stack.api_url, _stack_settings(stack), poll_interval=0.1)
    task = asyncio.ensure_future(panel.generate(PREFS))
    await asyncio.sleep(0.05)
    # while the run is followed, the buttons are disabled and a second start is refused
    assert panel.generate_button.disabled and panel.restore_button.disabled
    assert await panel.generate(PREFS) is None and "already" in panel.status.value
    session = await task
    assert session is not None and session.status.value == "completed"
    assert not panel.generate_button.disabled
    assert panel.progress.value == panel.progress.max == 2
    assert panel.summaries.value.count("<li>") == 2
    assert "<table" in panel.bundles.value and "summary 2 written" in panel.timeline.value
    restored = await panel.restore(session.session_id)
    assert restored == session
    # an error replaces the previous session's results
    assert await panel.restore("not-an-id") is None and "Malformed" in panel.status.value
    assert panel.summaries.value == panel.bundles.value == panel.timeline.value == ""
    assert panel.session is None and panel.progress.value == 0


async def test_run_headless_fails_loudly_when_the_api_is_down() -> None:
    panel = GenerationPanel("http://127.0.0.1:9", poll_interval=0.1)
    with pytest.raises(Exception, match="Cannot reach the tripkit API"):
        await panel.run_headless(PREFS)


def test_run_all_gets_the_same_panel_back(stack: LocalStack) -> None:
    target = Target("local", _stack_settings(stack), stack.api_url)
    first = GenerationPanel.shared(target, poll_interval=0.5)
    assert GenerationPanel.shared(target) is first and first.poll_interval == 2.0
    assert GenerationPanel.shared(Target("local", target.settings, "http://x:1")) is not first
    # the notebook's mode parameter sets the toggle on every run; without it, it is kept
    assert first.follow_by.value == "poll" and GenerationPanel.shared(target, mode="push") is first
    assert first.follow_by.value == "push" and GenerationPanel.shared(target).mode == "push"
    GenerationPanel.shared(target, mode="poll")


def test_an_unknown_mode_is_refused_naming_the_two() -> None:
    with pytest.raises(ConfigError, match="Unknown panel mode 'sse'") as error:
        GenerationPanel("http://127.0.0.1:9", mode="sse")
    assert 'mode = "poll"' in error.value.remedy and 'mode = "push"' in error.value.remedy


class RecordingPanel(GenerationPanel):
    """The panel, keeping every state it showed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.shown: list[Session] = []

    def show(self, session: Session) -> None:
        self.shown.append(session)
        super().show(session)


async def test_push_mode_shows_each_summary_as_it_lands_then_what_poll_mode_shows(
    stack: LocalStack, model_control: ModelControl
) -> None:
    # the last bundle is retried three times (50-200 ms backoffs): the run is still
    # going when the panel reads the session, and summary 2 shows alone for a while
    model_control.fault(status=500, times=3, task="bundle", index=2)
    settings = _stack_settings(stack)
    prefs = PREFS.model_copy(update={"bundle_count": 3})
    panel = RecordingPanel(stack.api_url, settings, poll_interval=30.0, mode="push")
    task = asyncio.ensure_future(panel.generate(prefs))
    await asyncio.sleep(0.05)
    assert panel.follow_by.disabled and panel.generate_button.disabled
    session = await task
    assert session is not None and session.status is Status.COMPLETED, panel.status.value
    assert not panel.follow_by.disabled
    # after the first read, a state per summary before the end (a 30 s poll would have
    # shown the first read and then the end)
    first = panel.shown[0]
    assert not first.is_final and panel.shown[-1] == session
    before_the_end = {s.progress.done for s in panel.shown if not s.is_final}
    assert set(range(first.progress.done, 4)) <= before_the_end
    assert panel.pushed >= 4 - first.progress.done  # each summary after the read, the end
    assert model_control.stats()["byOutcome"].get("500") == 3
    assert panel.polls == 2  # one read before the events, one of the final document
    assert panel.summaries.value.count("<li>") == 3 and "summary 3 written" in panel.timeline.value
    pushed = (panel.summaries.value, panel.bundles.value, panel.timeline.value)

    # poll mode restoring the same session shows exactly the same
    polling = GenerationPanel(stack.api_url, settings, poll_interval=0.1)
    assert await polling.restore(session.session_id) == session
    assert (polling.summaries.value, polling.bundles.value, polling.timeline.value) == pushed
    assert polling.status.value == panel.status.value

    # push mode restoring a finished session: one read, no stream
    assert await panel.restore(session.session_id) == session and panel.polls == 1
    assert panel.pushed == 0 and (panel.summaries.value, panel.bundles.value) == pushed[:2]
    # an unknown id is an error in push mode too, replacing the results
    assert await panel.restore("f" * 32) is None and "not found" in panel.status.value.lower()
    assert panel.summaries.value == panel.bundles.value == ""


@pytest.mark.parametrize("mode", ["poll", "push"])
async def test_cancel_stops_the_followed_run_and_shows_it_cancelled(
    stack: LocalStack, model_control: ModelControl, mode: str
) -> None:
    # bundles 2 and 3 are retried (50-200 ms backoffs each): time to cancel mid-run
    model_control.fault(status=500, times=3, task="bundle", index=1)
    model_control.fault(status=500, times=3, task="bundle", index=2)
    panel = GenerationPanel(stack.api_url, _stack_settings(stack), poll_interval=0.1, mode=mode)
    assert panel.cancel_button.disabled and await panel.cancel() is None
    assert "nothing to cancel" in panel.status.value
    task = asyncio.ensure_future(panel.generate(PREFS.model_copy(update={"bundle_count": 3})))
    async with asyncio.timeout(30):
        while panel.session is None or panel.session.progress.done < 1:
            await asyncio.sleep(0.02)
    assert not panel.cancel_button.disabled and panel.generate_button.disabled
    cancelled = await panel.cancel()
    assert cancelled is not None and cancelled.status is Status.CANCELLED
    session = await task
    assert session is not None and session.status is Status.CANCELLED
    assert session.session_id == cancelled.session_id and session.progress.done < 3
    assert f"<b>cancelled</b> ({session.error})" in panel.status.value
    assert panel.bundles.value == "" and "<td>cancelled</td>" in panel.timeline.value
    assert panel.cancel_button.disabled and not panel.generate_button.disabled
    # the session stays cancelled: nothing the run did after the cancel overwrote it
    assert await panel.restore(session.session_id) == session
