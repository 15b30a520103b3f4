"""The interactive generation panel of ``notebooks/02_generate_bundles.ipynb``.

An onboarding form, a Generate button, a progress bar with the summaries appearing as the
worker writes them, a "restore session" box (the guide's refresh test), the final
bundles as a table and the run's timeline. Widgets are updated by setting their values
(never ``clear_output`` in a loop), from tasks on the kernel's own event loop, which is
what keeps them working under nbval and papermill.
"""

from __future__ import annotations

import asyncio
import html
from datetime import date, datetime, timedelta
from typing import Any

import ipywidgets as w
import pandas as pd
from pydantic import ValidationError

from tripkit.api_client import ApiClient
from tripkit.errors import TripkitError
from tripkit.models import (
    MAX_BUNDLES,
    SAMPLE_PREFERENCES,
    Preferences,
    RunRecord,
    Session,
    Status,
)
from tripkit.store import SessionStore

SAMPLE = SAMPLE_PREFERENCES
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "JPY", "AUD", "CAD", "SEK", "NOK", "DKK"]


def summaries_html(session: Session) -> str:
    """The summaries so far, as the original app lists them while it waits."""
    if not session.summaries:
        return "<i>No summaries yet.</i>"
    items = "".join(
        f"<li><b>{html.escape(s.title)}</b> ({html.escape(s.destination)})<br>"
        f"{html.escape(s.text)}</li>"
        for s in session.summaries
    )
    return f"<ol>{items}</ol>"


def bundles_frame(session: Session) -> pd.DataFrame:
    """One row per bundle: what a traveller compares."""
    return pd.DataFrame(
        [
            {
                "bundle": b.title,
                "destination": f"{b.destination}, {b.country}".strip(", "),
                "nights": b.nights,
                "cost": round(b.estimated_cost),
                "currency": b.currency,
                "highlights": "; ".join(b.highlights[:3]),
            }
            for b in session.bundles
        ],
        index=pd.RangeIndex(1, len(session.bundles) + 1, name="#"),
    )


def timeline_frame(session: Session, record: RunRecord | None) -> pd.DataFrame:
    """When each thing happened, in seconds after the request: from the session and the
    worker's run record (which adds every summary's time and the attempts)."""
    events: list[tuple[str, datetime | None]] = [
        ("queued (sessionId returned)", session.created_at),
        ("started", session.started_at),
    ]
    if record and record.summary_at:
        events += [(f"summary {i + 1} written", at) for i, at in enumerate(record.summary_at)]
    else:
        events.append(("first summary written", session.first_summary_at))
    events.append((session.status.value, session.completed_at))
    rows = [
        {"event": name, "at": at, "seconds": round((at - session.created_at).total_seconds(), 2)}
        for name, at in events
        if at is not None
    ]
    return pd.DataFrame(rows)


class GenerationPanel:
    """Build with ``GenerationPanel(api_url, store)`` and show ``panel.widget``."""

    def __init__(
        self,
        api_url: str,
        store: SessionStore | None = None,
        *,
        poll_interval: float = 2.0,
        defaults: Preferences = SAMPLE,
    ) -> None:
        self.api_url = api_url
        self.store = store
        self.poll_interval = poll_interval
        self.session: Session | None = None
        self.polls = 0
        self._task: asyncio.Task[Session | None] | None = None

        days = defaults.days
        self.interests = w.TagsInput(value=list(defaults.interests), allow_duplicates=False)
        self.use_dates = w.Checkbox(value=False, description="exact dates")
        self.start_date = w.DatePicker(value=date.today() + timedelta(days=30))
        self.end_date = w.DatePicker(value=date.today() + timedelta(days=29 + days))
        self.length = w.IntSlider(value=days, min=1, max=30, description="days")
        self.budget = w.BoundedFloatText(value=defaults.budget, min=1, max=1_000_000)
        self.currency = w.Dropdown(options=CURRENCIES, value=defaults.currency)
        self.travellers = w.IntSlider(value=defaults.travellers, min=1, max=20)
        self.pace = w.ToggleButtons(options=["relaxed", "balanced", "packed"], value=defaults.pace)
        self.notes = w.Textarea(value=defaults.notes, placeholder="Anything else?")
        self.bundle_count = w.IntSlider(value=defaults.bundle_count, min=1, max=MAX_BUNDLES)
        self.generate_button = w.Button(description="Generate Bundles", button_style="primary")
        self.restore_id = w.Text(placeholder="a sessionId to restore")
        self.restore_button = w.Button(description="Restore session")
        self.status = w.HTML("Fill in the form and press <b>Generate Bundles</b>.")
        self.progress = w.IntProgress(value=0, min=0, max=defaults.bundle_count)
        self.summaries = w.HTML("")
        self.bundles = w.HTML("")
        self.timeline = w.HTML("")
        self.generate_button.on_click(lambda _: self._start(self.generate()))
        self.restore_button.on_click(lambda _: self._start(self.restore(self.restore_id.value)))

        def row(label: str, *items: w.Widget) -> w.HBox:
            return w.HBox([w.Label(label, layout=w.Layout(width="110px")), *items])

        self.widget = w.VBox(
            [
                row("Interests", self.interests),
                row("Trip", self.length, self.use_dates, self.start_date, self.end_date),
                row("Budget", self.budget, self.currency),
                row("Travellers", self.travellers),
                row("Pace", self.pace),
                row("Notes", self.notes),
                row("Bundles", self.bundle_count),
                w.HBox([self.generate_button, self.restore_id, self.restore_button]),
                self.status,
                self.progress,
                self.summaries,
                self.bundles,
                self.timeline,
            ]
        )

    def preferences(self) -> Preferences:
        """The form as validated preferences (raises ``ValidationError``)."""
        dates: dict[str, Any] = (
            {"start_date": self.start_date.value, "end_date": self.end_date.value}
            if self.use_dates.value
            else {"trip_length_days": self.length.value}
        )
        return Preferences(
            interests=list(self.interests.value),
            budget=self.budget.value,
            currency=self.currency.value,
            travellers=self.travellers.value,
            pace=self.pace.value,
            notes=self.notes.value,
            bundle_count=self.bundle_count.value,
            **dates,
        )

    def _start(self, job: Any) -> None:
        if self._task is not None and not self._task.done():
            self.status.value = "A generation is being followed already."
            job.close()
            return
        self._task = asyncio.ensure_future(job)

    def _error(self, message: str) -> None:
        self.status.value = f"<span style='color:#b00'>{html.escape(message)}</span>"

    async def generate(self, preferences: Preferences | None = None) -> Session | None:
        """Request bundles (from the form unless given) and follow them to the end."""
        try:
            prefs = preferences or self.preferences()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in exc.errors()
            )
            self._error(f"Check the form: {problems}")
            return None
        try:
            async with ApiClient(self.api_url) as api:
                session_id = await api.request_bundles(prefs)
                self.restore_id.value = session_id
                return await self._follow(api, session_id)
        except TripkitError as exc:
            self._error(str(exc))
            return None

    async def restore(self, session_id: str) -> Session | None:
        """Pick up a session by id, as a refreshed page does."""
        try:
            async with ApiClient(self.api_url) as api:
                return await self._follow(api, session_id.strip())
        except TripkitError as exc:
            self._error(str(exc))
            return None

    async def _follow(self, api: ApiClient, session_id: str) -> Session:
        session: Session | None = None
        async for session in api.watch(session_id, interval=self.poll_interval, timeout=3600):
            self.show(session)
        self.polls = api.polls
        assert session is not None
        if session.status is Status.COMPLETED:
            self.bundles.value = bundles_frame(session).to_html()
        record = await self.store.get_run_record(session_id) if self.store else None
        self.timeline.value = timeline_frame(session, record).to_html(index=False)
        return session

    def show(self, session: Session) -> None:
        """Reflect one poll in the widgets."""
        self.session = session
        self.progress.max = session.progress.total
        self.progress.value = session.progress.done
        state = session.status.value
        if session.status is Status.FAILED:
            self._error(f"Failed: {session.error}")
        else:
            self.status.value = (
                f"Session <code>{session.session_id}</code>: <b>{state}</b>, "
                f"{session.progress.done} of {session.progress.total} summaries"
            )
        self.summaries.value = summaries_html(session)
