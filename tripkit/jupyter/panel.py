"""The interactive generation panel of ``notebooks/02_generate_bundles.ipynb``.

An onboarding form, a Generate button, a progress bar with the summaries appearing as the
worker writes them, a "restore session" box (the guide's refresh test), then the final
bundles as a table and the run's timeline: everything a run produces shows inside the
panel, so it does not matter which cells ran before the button was pressed. Widgets are
updated by setting their values (never ``clear_output`` in a loop), from tasks on the
kernel's own event loop, which is what keeps them working under nbval and papermill.

Two ways to follow a session, chosen with the panel's **follow by** toggle (the
notebook's ``mode``): ``poll``, the original app's way (``GET /api/session/{id}`` every
``poll_interval`` seconds, one Redis command each), or ``push`` (one read, then the
session's events from ``GET /api/session/{id}/events`` as the worker writes them, and one
read at the end). Both show the same: the summaries as they land, then the bundles and
the timeline of the final document.

:meth:`GenerationPanel.shared` hands a re-run notebook (Run All) the panel it already
shows, so a session being followed is not lost with the old widgets.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal, cast, get_args

import annotated_types
import ipywidgets as w
import pandas as pd
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from tripkit import events
from tripkit.api_client import ApiClient, ApiError
from tripkit.config import Settings
from tripkit.errors import ConfigError, TripkitError
from tripkit.jupyter.targets import Target
from tripkit.models import (
    MAX_BUNDLES,
    MAX_TRIP_DAYS,
    SAMPLE_PREFERENCES,
    Preferences,
    RunRecord,
    Session,
    Status,
)
from tripkit.store import SessionStore

SAMPLE = SAMPLE_PREFERENCES
Mode = Literal["poll", "push"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)
#: How long a session is followed before the panel gives up on it, in either mode.
FOLLOW_TIMEOUT = 3600.0
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "JPY", "AUD", "CAD", "SEK", "NOK", "DKK"]
#: What to do when the restore box is empty.
RESTORE_HINT = (
    "Type or paste a sessionId into the box next to <b>Restore session</b> (the 32-character "
    "id shown after <b>Generate Bundles</b>), then press the button."
)
#: Form rows, keyed as the errors are: the labels people see.
ROWS = {
    "interests": "Interests",
    "trip": "Trip",
    "budget": "Budget",
    "travellers": "Travellers",
    "pace": "Pace",
    "notes": "Notes",
    "bundles": "Bundles",
}
_ROW_OF_FIELD = {
    "interests": "interests",
    "start_date": "trip",
    "end_date": "trip",
    "trip_length_days": "trip",
    "budget": "budget",
    "currency": "budget",
    "travellers": "travellers",
    "pace": "pace",
    "notes": "notes",
    "bundle_count": "bundles",
}
_panels: dict[str, GenerationPanel] = {}  # one per API, for the kernel's lifetime


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


def _red(markup: str) -> str:
    return f"<span style='color:#b00'>{markup}</span>"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def allowed_range(field: str) -> str:
    """The bounds of a numeric :class:`Preferences` field in words, from the model itself."""
    parts = []
    for bound in Preferences.model_fields[field].metadata:
        if isinstance(bound, annotated_types.Gt):
            parts.append(f"more than {_number(float(bound.gt))}")  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Ge):
            parts.append(f"at least {_number(float(bound.ge))}")  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Le):
            parts.append(f"at most {_number(float(bound.le))}")  # type: ignore[arg-type]
        elif isinstance(bound, annotated_types.Lt):
            parts.append(f"less than {_number(float(bound.lt))}")  # type: ignore[arg-type]
    return " and ".join(parts)


def plain_error(error: ErrorDetails) -> tuple[str, str]:
    """One validation error as (form row, a sentence that says what to fix)."""
    field = str(error["loc"][0]) if error["loc"] else ""
    row = _ROW_OF_FIELD.get(field, field or "trip")
    kind, ctx = error["type"], error.get("ctx", {})
    if field == "interests" and kind == "too_short":
        return row, "Add at least one interest: type it and press Enter."
    if field == "interests" and kind == "too_long":
        return row, f"At most {ctx.get('max_length')} interests; remove some."
    if field == "interests" and kind == "string_too_long":
        return row, f"An interest can be at most {ctx.get('max_length')} characters long."
    if field == "interests" and kind == "string_too_short":
        return row, "An interest cannot be empty."
    if kind == "string_too_long":
        return row, f"At most {ctx.get('max_length'):,} characters; shorten it."
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        what = "budget" if field == "budget" else ROWS[row].lower()
        return row, f"The {what} must be {allowed_range(field)}."
    if kind in ("float_parsing", "int_parsing", "float_type", "int_type"):
        return row, "Enter a number."
    message = error["msg"].removeprefix("Value error, ")
    for code, words in (("startDate", "the start date"), ("endDate", "the end date")):
        message = message.replace(code, words)
    message = message.replace("tripLengthDays", "the number of days")
    return row, message[:1].upper() + message[1:] + "."


class GenerationPanel:
    """Build with ``GenerationPanel(api_url, settings)`` (or :meth:`shared` in a notebook)
    and show ``panel.widget``. ``settings`` say where the run records are (Redis); without
    them the timeline has the session's times only."""

    def __init__(
        self,
        api_url: str,
        settings: Settings | None = None,
        *,
        poll_interval: float = 2.0,
        mode: str = "poll",
        defaults: Preferences = SAMPLE,
    ) -> None:
        self.api_url = api_url
        self.settings = settings
        self.poll_interval = poll_interval
        self.follow_by = w.ToggleButtons(
            options=MODES,
            tooltips=[
                "GET /api/session/{id} every poll interval, as the original app does",
                "the session's events by push, the moment the worker writes them",
            ],
            style={"button_width": "60px"},
        )
        self.mode = mode
        self.session: Session | None = None
        #: Session reads (``GET /api/session/{id}``) of the last follow.
        self.polls = 0
        #: Events received by push in the last follow.
        self.pushed = 0
        self.following = False
        self.last_error: str | None = None
        self._task: asyncio.Task[Session | None] | None = None
        #: The id of the session being followed, while it is.
        self.followed: str | None = None

        days = defaults.days
        self.interests = w.TagsInput(value=list(defaults.interests), allow_duplicates=False)
        self.use_dates = w.Checkbox(value=False, description="exact dates")
        self.start_date = w.DatePicker(value=date.today() + timedelta(days=30))
        self.end_date = w.DatePicker(value=date.today() + timedelta(days=29 + days))
        self.length = w.IntSlider(value=days, min=1, max=MAX_TRIP_DAYS)
        # A plain number box: a value out of range is an error to fix, never clamped.
        self.budget = w.FloatText(value=defaults.budget, layout=w.Layout(width="160px"))
        self.currency = w.Dropdown(options=CURRENCIES, value=defaults.currency)
        self.travellers = w.IntSlider(value=defaults.travellers, min=1, max=20)
        self.pace = w.ToggleButtons(options=["relaxed", "balanced", "packed"], value=defaults.pace)
        self.notes = w.Textarea(value=defaults.notes, placeholder="Anything else?")
        self.bundle_count = w.IntSlider(value=defaults.bundle_count, min=1, max=MAX_BUNDLES)
        self.field_errors = {row: w.HTML("", layout=w.Layout(margin="0 0 0 110px")) for row in ROWS}
        self.restore_id = w.Text(placeholder="a sessionId to restore")
        self.status = w.HTML("Fill in the form and press <b>Generate Bundles</b>.")
        self.progress = w.IntProgress(value=0, min=0, max=defaults.bundle_count)
        self.summaries = w.HTML("")
        self.bundles = w.HTML("")
        self.timeline = w.HTML("")
        self.actions = self._actions()
        self.days_label = w.Label("days")
        self.use_dates.observe(lambda _: self._show_dates(), "value")
        self._show_dates()

        def row(key: str, *items: w.Widget) -> w.VBox:
            label = w.Label(ROWS[key], layout=w.Layout(width="110px"))
            return w.VBox([w.HBox([label, *items]), self.field_errors[key]])

        self.widget = w.VBox(
            [
                row("interests", self.interests),
                row(
                    "trip",
                    self.length,
                    self.days_label,
                    self.start_date,
                    self.end_date,
                    self.use_dates,
                ),
                row("budget", self.budget, self.currency),
                row("travellers", self.travellers),
                row("pace", self.pace),
                row("notes", self.notes),
                row("bundles", self.bundle_count),
                self.actions,
                self.status,
                self.progress,
                self.summaries,
                self.bundles,
                self.timeline,
            ]
        )
        self.widget.add_class("tripkit-panel")

    @property
    def mode(self) -> Mode:
        """``poll`` or ``push``: how the next session is followed (the toggle's value)."""
        return cast(Mode, self.follow_by.value)

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ConfigError(
                f"Unknown panel mode {value!r}.",
                remedy='Set mode = "poll" (the app\'s polling every 2 s) or mode = "push" '
                "(events from GET /api/session/{id}/events).",
            )
        self.follow_by.value = value

    @classmethod
    def shared(
        cls, target: Target, *, poll_interval: float | None = None, mode: str | None = None
    ) -> GenerationPanel:
        """The kernel's panel for ``target``'s API, made on the first call; ``mode`` (when
        given) sets how the next session is followed.

        Run All executes the notebook again while a generation may be followed; a new panel
        would show empty widgets while the old one kept the session out of sight.
        """
        if target.api_url is None:
            raise ConfigError(
                "The app's URL is not set, so there is nothing to generate with.",
                remedy="Set TRIPKIT_API_URL to the deployed app (e.g. "
                "https://special-trips.example.com), or use environment = 'local'.",
            )
        interval = poll_interval or target.settings.poll_interval
        panel = _panels.get(target.api_url)
        if panel is None:
            panel = cls(target.api_url, target.settings, poll_interval=interval)
            _panels[target.api_url] = panel
        panel.settings = target.settings
        panel.poll_interval = interval
        if mode is not None:
            panel.mode = mode
        return panel

    def _show_dates(self) -> None:
        """A length in days, or exact dates: only the one in use is shown."""
        exact = bool(self.use_dates.value)
        for widget in (self.start_date, self.end_date):
            widget.layout.display = None if exact else "none"
        for widget in (self.length, self.days_label):
            widget.layout.display = "none" if exact else None

    def _actions(self) -> w.VBox:
        """The buttons, in one place: each starts a job that follows a session, the way
        the toggle above them says."""
        self.generate_button = w.Button(description="Generate Bundles", button_style="primary")
        self.restore_button = w.Button(description="Restore session")
        # Enabled only while a session is followed: the run stops at its next step.
        self.cancel_button = w.Button(
            description="Cancel",
            button_style="danger",
            disabled=True,
            tooltip="Stop the generation being followed",
        )
        self.generate_button.on_click(lambda _: self._start(self.generate()))
        self.restore_button.on_click(lambda _: self._start(self.restore(self.restore_id.value)))
        # Not _start: the follow's task stays the one to wait for.
        self.cancel_button.on_click(
            lambda _: asyncio.ensure_future(self.cancel()).add_done_callback(self._done)
        )
        #: Disabled while a session is followed.
        self.buttons = [self.generate_button, self.restore_button, self.follow_by]
        label = w.Label("Follow by", layout=w.Layout(width="110px"))
        return w.VBox(
            [
                w.HBox([label, self.follow_by]),
                w.HBox(
                    [
                        self.generate_button,
                        self.cancel_button,
                        self.restore_id,
                        self.restore_button,
                    ]
                ),
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

    def form_errors(self) -> dict[str, str]:
        """What to fix in the form, by row (empty when it is valid)."""
        if self.use_dates.value and (self.start_date.value is None or self.end_date.value is None):
            return {"trip": "Pick both a start and an end date, or untick exact dates."}
        try:
            self.preferences()
        except ValidationError as exc:
            problems: dict[str, str] = {}
            for error in exc.errors():
                row, message = plain_error(error)
                problems.setdefault(row, message)
            return problems
        return {}

    def _start(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        task.add_done_callback(self._done)
        self._task = task

    def _done(self, task: asyncio.Task[Session | None]) -> None:
        # A button's job has no caller to raise to: anything unexpected is shown instead.
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fail(f"Unexpected error: {type(exc).__name__}: {exc}")

    @contextmanager
    def _following(self) -> Iterator[None]:
        self.following = True
        for button in self.buttons:
            button.disabled = True
        try:
            yield
        finally:
            self.following = False
            for button in self.buttons:
                button.disabled = False

    def _fail(self, message: str) -> None:
        """Show an error in place of whatever the panel showed before."""
        self.last_error = message
        self.session = None
        self.progress.value = 0
        self.summaries.value = self.bundles.value = self.timeline.value = ""
        self.status.value = _red(f"<b>Error:</b> {html.escape(message)}")

    def _clear(self, status: str) -> None:
        self.last_error = None
        self.session = None
        self.progress.value = 0
        self.summaries.value = self.bundles.value = self.timeline.value = ""
        self.status.value = status

    def _busy(self) -> bool:
        if self.following:
            self.status.value = "A generation is being followed already; wait for its end."
        return self.following

    async def generate(self, preferences: Preferences | None = None) -> Session | None:
        """Request bundles (from the form unless given) and follow them to the end."""
        if self._busy():
            return None
        for label in self.field_errors.values():
            label.value = ""
        if preferences is None:
            problems = self.form_errors()
            if problems:
                for row, message in problems.items():
                    self.field_errors[row].value = _red(html.escape(message))
                self._fail(
                    "Check the form: "
                    + "; ".join(f"{ROWS[row]}: {msg}" for row, msg in problems.items())
                )
                return None
            preferences = self.preferences()
        with self._following():
            self._clear("Requesting bundles...")
            try:
                async with ApiClient(self.api_url) as api:
                    session_id = await api.request_bundles(preferences)
                    self.restore_id.value = session_id
                    return await self._follow(api, session_id)
            except TripkitError as exc:
                self._fail(str(exc))
                return None

    async def restore(self, session_id: str) -> Session | None:
        """Pick up a session by id, as a refreshed page does."""
        if self._busy():
            return None
        session_id = session_id.strip()
        if not session_id:
            self._clear(RESTORE_HINT)
            return None
        with self._following():
            self._clear(f"Restoring session <code>{html.escape(session_id)}</code>...")
            try:
                async with ApiClient(self.api_url) as api:
                    return await self._follow(api, session_id)
            except TripkitError as exc:
                self._fail(str(exc))
                return None

    def _updates(self, api: ApiClient, session_id: str) -> AsyncGenerator[Session, None]:
        """Where the session's states come from, in the panel's mode."""
        if self.mode == "push":
            return self._pushed(api, session_id)
        return api.watch(session_id, interval=self.poll_interval)

    async def _pushed(self, api: ApiClient, session_id: str) -> AsyncGenerator[Session, None]:
        """The session by push: read once (what it is so far), then fold in each event
        after that read as it comes, then read the final document, so the bundles and
        the timeline are exactly what poll mode ends with."""
        session = await api.session(session_id)
        yield session
        if session.is_final:
            return
        after = events.derive(session)[-1].id
        async with aclosing(api.follow(session_id, after)) as stream:
            async for event in stream:
                self.pushed += 1
                session = events.apply(session, event)
                if not event.is_final:
                    yield session
        yield await api.session(session_id)

    async def _follow(self, api: ApiClient, session_id: str) -> Session:
        """Show every state of the session until it ends, then its bundles and timeline."""
        session: Session | None = None
        self.pushed = 0
        self.followed = session_id
        self.cancel_button.disabled = False
        try:
            async with (
                asyncio.timeout(FOLLOW_TIMEOUT),
                aclosing(self._updates(api, session_id)) as updates,
            ):
                async for session in updates:
                    self.show(session)
        except TimeoutError:
            state = session.status.value if session else "unread"
            raise TripkitError(
                f"Session {session_id} is still {state} after {FOLLOW_TIMEOUT:.0f} s.",
                remedy="A generation that never ends? Check that the worker is running "
                "(Inngest dashboard, or `tripkit check`).",
            ) from None
        finally:
            self.polls = api.polls
            self.followed = None
            self.cancel_button.disabled = True
        assert session is not None
        self.show_results(session, await self._run_record(session_id))
        return session

    async def cancel(self) -> Session | None:
        """Cancel the generation being followed (``POST /api/session/{id}/cancel``); the
        follow then shows the session's final ``cancelled`` state. Returns the cancelled
        session, or ``None`` when nothing was cancelled (the reason is shown)."""
        session_id = self.followed
        if session_id is None:
            self.status.value = "No generation is being followed: there is nothing to cancel."
            return None
        self.cancel_button.disabled = True
        self.status.value = f"Cancelling session <code>{session_id}</code>..."
        try:
            async with ApiClient(self.api_url) as api:
                return await api.cancel(session_id)
        except TripkitError as exc:
            if isinstance(exc, ApiError) and exc.status == 409:
                return None  # it finished first: the follow shows how
            self.status.value = _red(f"<b>Not cancelled:</b> {html.escape(str(exc))}")
            self.cancel_button.disabled = self.followed != session_id
            return None

    async def _run_record(self, session_id: str) -> RunRecord | None:
        # A store per read: its connections belong to the event loop that opened them.
        if self.settings is None:
            return None
        async with SessionStore.from_settings(self.settings) as store:
            return await store.get_run_record(session_id)

    def show(self, session: Session) -> None:
        """Reflect one poll in the widgets."""
        self.session = session
        self.progress.max = session.progress.total
        self.progress.value = session.progress.done
        state = session.status.value
        if session.status is Status.FAILED:
            self.last_error = f"Failed: {session.error}"
            self.status.value = _red(f"<b>Failed:</b> {html.escape(str(session.error))}")
        else:
            why = f" ({html.escape(session.error)})" if session.error else ""
            self.status.value = (
                f"Session <code>{session.session_id}</code>: <b>{state}</b>{why}, "
                f"{session.progress.done} of {session.progress.total} summaries"
            )
        self.summaries.value = summaries_html(session)

    def show_results(self, session: Session, record: RunRecord | None) -> None:
        """The final bundles (when it completed) and the run's timeline."""
        self.bundles.value = (
            "<h4>The bundles</h4>"
            + bundles_frame(session).to_html(justify="left", index_names=False)
            if session.status is Status.COMPLETED
            else ""
        )
        timeline = timeline_frame(session, record)
        timeline["at"] = [f"{at:%H:%M:%S} UTC" for at in timeline["at"]]
        self.timeline.value = "<h4>The run's timeline (seconds after the request)</h4>" + (
            timeline.to_html(index=False, justify="left")
        )

    async def run_headless(self, preferences: Preferences = SAMPLE) -> Session:
        """For papermill and CI: generate with ``preferences``, follow to the end, restore
        the session by id; raise if any of it did not work, so the run fails loudly."""
        session = await self.generate(preferences)
        if session is None or session.status is not Status.COMPLETED:
            state = session.status.value if session else "not started"
            raise TripkitError(f"The generation ended {state}: {self.last_error or 'no error'}.")
        if len(session.bundles) != preferences.bundle_count:
            raise TripkitError(
                f"{len(session.bundles)} bundles arrived of {preferences.bundle_count} requested."
            )
        restored = await self.restore(session.session_id)
        if restored != session:
            raise TripkitError(f"Restoring {session.session_id} did not give the same session.")
        return session
