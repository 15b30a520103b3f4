"""tripkit.jupyter.panel: its pure views, and the panel driving the real stack."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tripkit import sessions
from tripkit.devstack.stack import LocalStack
from tripkit.jupyter.panel import GenerationPanel, bundles_frame, summaries_html, timeline_frame
from tripkit.models import Bundle, Preferences, RunRecord, Status, Summary
from tripkit.store import SessionStore
from tripkit.transport.rest import RestTransport

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


def test_form_validation_errors_are_shown_not_raised() -> None:
    panel = GenerationPanel("http://127.0.0.1:9", None)
    panel.interests.value = []
    assert asyncio.run(panel.generate()) is None
    assert "Check the form" in panel.status.value and "interests" in panel.status.value


async def test_the_panel_generates_and_restores_on_the_stack(stack: LocalStack) -> None:
    store = SessionStore(RestTransport(stack.rest_url, stack.rest_token))
    panel = GenerationPanel(stack.api_url, store, poll_interval=0.1)
    session = await panel.generate(PREFS)
    assert session is not None and session.status.value == "completed"
    assert panel.progress.value == panel.progress.max == 2
    assert panel.summaries.value.count("<li>") == 2
    assert "<table" in panel.bundles.value and "summary 2 written" in panel.timeline.value
    restored = await panel.restore(session.session_id)
    assert restored == session
    assert await panel.restore("not-an-id") is None and "Malformed" in panel.status.value
    await store.aclose()
