"""The data tripkit moves around: onboarding preferences, sessions, summaries, bundles,
the event that starts a generation, the outputs its steps pass on, and its run record.

These are the edge models (HTTP bodies, events, Inngest step outputs, what Redis holds):
every writer and reader shares one definition. On the wire they use the original API's
camelCase (``sessionId``); in Python they are snake_case.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tripkit.keys import validate_session_id

MAX_TRIP_DAYS = 60
MAX_BUNDLES = 10
DEFAULT_BUNDLES = 3

Pace = Literal["relaxed", "balanced", "packed"]


class Status(StrEnum):
    """The states of a session; ``completed``, ``failed`` and ``cancelled`` are final."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _currency(value: str) -> str:
    value = value.strip().upper()
    if not _CURRENCY.match(value):
        raise ValueError("currency must be a 3-letter ISO 4217 code such as EUR or USD")
    return value


ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
Currency = Annotated[str, AfterValidator(_currency)]


def utcnow() -> datetime:
    """Timestamps are timezone-aware UTC, so they compare and serialize unambiguously."""
    return datetime.now(UTC)


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Preferences(WireModel):
    """What a traveller enters during onboarding, before "Generate Bundles"."""

    interests: list[ShortText] = Field(min_length=1, max_length=10)
    start_date: date | None = None
    end_date: date | None = None
    trip_length_days: int | None = Field(default=None, ge=1, le=MAX_TRIP_DAYS)
    budget: float = Field(gt=0, le=1_000_000, description="Total budget for the whole party.")
    currency: Currency = "EUR"
    travellers: int = Field(default=1, ge=1, le=20)
    pace: Pace = "balanced"
    notes: str = Field(default="", max_length=1000)
    bundle_count: int = Field(default=DEFAULT_BUNDLES, ge=1, le=MAX_BUNDLES)

    @model_validator(mode="after")
    def _dates_or_length(self) -> Preferences:
        if (self.start_date is None) != (self.end_date is None):
            raise ValueError("give both startDate and endDate, or neither")
        if self.start_date is not None and self.end_date is not None:
            days = (self.end_date - self.start_date).days + 1
            if days < 1:
                raise ValueError("endDate must be on or after startDate")
            if days > MAX_TRIP_DAYS:
                raise ValueError(f"a trip can last at most {MAX_TRIP_DAYS} days")
            if self.trip_length_days is not None and self.trip_length_days != days:
                raise ValueError("tripLengthDays does not match startDate..endDate")
        elif self.trip_length_days is None:
            raise ValueError("give startDate and endDate, or tripLengthDays")
        return self

    @property
    def days(self) -> int:
        """The trip length in days, whichever way it was given."""
        if self.start_date is not None and self.end_date is not None:
            return (self.end_date - self.start_date).days + 1
        assert self.trip_length_days is not None  # guaranteed by the validator
        return self.trip_length_days


class Summary(WireModel):
    """The short pitch of one bundle; written into the session as soon as it is complete."""

    index: int = Field(ge=0, lt=MAX_BUNDLES)
    title: str = Field(min_length=1, max_length=200)
    destination: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=4000)


class ItineraryDay(WireModel):
    day: int = Field(ge=1, le=MAX_TRIP_DAYS)
    title: str = Field(min_length=1, max_length=200)
    activities: list[str] = Field(default_factory=list, max_length=20)


class Bundle(WireModel):
    """One complete trip proposal."""

    index: int = Field(ge=0, lt=MAX_BUNDLES)
    title: str = Field(min_length=1, max_length=200)
    destination: str = Field(min_length=1, max_length=200)
    country: str = Field(default="", max_length=100)
    nights: int = Field(ge=0, le=MAX_TRIP_DAYS)
    estimated_cost: float = Field(ge=0)
    currency: Currency = "EUR"
    highlights: list[str] = Field(default_factory=list, max_length=20)
    itinerary: list[ItineraryDay] = Field(default_factory=list, max_length=MAX_TRIP_DAYS)


class Progress(WireModel):
    """How far the generation is: summaries written out of bundles requested."""

    done: int = Field(default=0, ge=0)
    total: int = Field(ge=1, le=MAX_BUNDLES)


class Session(WireModel):
    """Everything a poller sees. Stored in Redis as one JSON document."""

    session_id: str
    status: Status = Status.QUEUED
    preferences: Preferences
    summaries: list[Summary] = Field(default_factory=list)
    bundles: list[Bundle] = Field(default_factory=list)
    error: str | None = None
    progress: Progress
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    first_summary_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class IdempotencyRecord(WireModel):
    """What Redis holds under an ``Idempotency-Key``: the session that key started and a
    fingerprint of the preferences it was started with (a repeat must match them)."""

    session_id: str
    fingerprint: str

    @classmethod
    def of(cls, session_id: str, preferences: Preferences) -> IdempotencyRecord:
        # The validated preferences, so key order, spacing and spelled-out defaults in
        # the request body do not make the same request look different.
        canonical = preferences.model_dump_json(by_alias=True).encode()
        return cls(session_id=session_id, fingerprint=hashlib.sha256(canonical).hexdigest())


# --- the generation run: its event, its steps' outputs, its record -----------------------


class BundlesRequested(WireModel):
    """The data of the event that starts a generation: which session, what preferences,
    and when the session was created. With those the worker rebuilds the queued session
    document (:func:`tripkit.sessions.new`) instead of reading it; an event an older
    tripkit sent has no ``createdAt``, and the worker reads the session then."""

    session_id: str
    preferences: Preferences
    created_at: datetime | None = None

    @field_validator("session_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return validate_session_id(value)


class TokenUsage(WireModel):
    """Tokens one model call used, as the stream's final chunk reported them."""

    model: str
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class StepOutput(WireModel):
    """What a step returns; Inngest memoizes it, and a run resumed after a redeploy reads
    it back with the new code: fields it does not know are ignored, not refused."""

    model_config = ConfigDict(extra="ignore")


class BundleOutput(StepOutput):
    """What a ``bundle-<i>`` step returns: the session as it left it (with summary *i*;
    the last step's is the completed session), the bundle, the call's usage, the attempt
    it took. The next step reads the session and the earlier bundles from these."""

    session: Session
    bundle: Bundle
    usage: TokenUsage
    attempt: int = Field(ge=0)
    summary_at: AwareDatetime


class FinalOutput(WireModel):
    """What the run returns (after its last step)."""

    session_id: str
    status: Status
    bundles: int = Field(ge=0)


class RunRecord(WireModel):
    """The worker's record of one generation run: timings, attempts, token usage.

    Written once per run next to the session (``<prefix>:run:<sessionId>``, same TTL) by
    the last ``bundle-<i>`` step, or by the failure handler (which knows only what the failure
    event says, so most fields stay empty). Read by the usage history and the notebook's
    timeline. Unknown fields are ignored, so a record written by a newer tripkit still
    reads.
    """

    model_config = ConfigDict(extra="ignore")

    session_id: str
    run_id: str | None = None
    status: Status
    error: str | None = None
    queued_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    first_summary_at: AwareDatetime | None = None
    summary_at: list[AwareDatetime] = Field(default_factory=list)
    completed_at: AwareDatetime | None = None
    failed_at: AwareDatetime | None = None
    cancelled_at: AwareDatetime | None = None
    attempts: dict[str, int] = Field(default_factory=dict)
    bundles: int | None = None
    steps: int | None = None
    model_calls: int | None = None
    usage: list[TokenUsage] = Field(default_factory=list)


#: The preferences the demo, the notebooks and the benchmarks submit.
SAMPLE_PREFERENCES = Preferences(
    interests=["food", "museums", "architecture"],
    trip_length_days=5,
    budget=4000,
    currency="EUR",
    travellers=2,
    pace="balanced",
    notes="We love long lunches and walking tours.",
)
