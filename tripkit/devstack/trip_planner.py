"""The offline model's brain: deterministic trip plans from a small bundled dataset.

The stand-in model server answers the worker's prompts with this module, so the whole
stack can run without OpenAI. The same preferences always give the same answer, and the
answers always validate as :class:`~tripkit.models.Summary` / :class:`~tripkit.models.Bundle`.

The prompt contract (:mod:`tripkit.llm`): the last user message ends with a fenced block
(a line "```json", one JSON object, a line "```"); the last such block is the task,
``{"task": "bundle", "preferences": {...}, "index": i, "count": N, "avoid": [...]}``, and
the answer is two NDJSON lines, ``{"summary": {...}}`` then ``{"bundle": {...}}``, for the
best-matching destination not in ``avoid``. Asked for bundles 0, 1, 2... in turn, each
avoiding the destinations before it, it answers the same destinations in the same order
as :func:`plan` ranks them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import count as counter
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tripkit.models import MAX_BUNDLES, Bundle, ItineraryDay, Pace, Preferences, Summary

NOT_A_TRIP_REPLY = (
    "Sorry, I can only plan trips. Send the task and the traveller's preferences as one "
    "JSON object in a fenced json block at the end of your message."
)

_FENCED_JSON = re.compile(r"```json[ \t]*\r?\n(.*?)\r?\n[ \t]*```", re.DOTALL)
_NON_WORD = re.compile(r"[^0-9a-z]+")

_ACTIVITIES_PER_DAY: dict[Pace, int] = {"relaxed": 2, "balanced": 3, "packed": 4}
_HIGHLIGHTS: dict[Pace, int] = {"relaxed": 3, "balanced": 4, "packed": 5}
_SPEND_FACTOR: dict[Pace, float] = {"relaxed": 0.9, "balanced": 1.0, "packed": 1.15}
_BUDGET_SHARE = 0.97  # an estimate never uses the whole budget
_FALLBACK_DAILY_EUR = 120.0  # for a destination the dataset does not know


class _DataModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class DayPlan(_DataModel):
    """A day template; ``{city}`` and ``{trip}`` are filled in when used."""

    title: str
    activities: list[str]


class Destination(_DataModel):
    name: str
    country: str
    region: str = ""
    daily_cost_eur: float = Field(gt=0, description="Typical spend per person per day.")
    pace: Pace = "balanced"
    tags: list[str]
    highlights: list[str]
    day_trips: list[str] = Field(default_factory=list)
    days: list[DayPlan] = Field(default_factory=list)


class Dataset(_DataModel):
    eur_per_unit: dict[str, float]
    tag_synonyms: dict[str, str] = Field(default_factory=dict)
    arrival_day: DayPlan
    departure_day: DayPlan
    filler_days: list[DayPlan] = Field(min_length=1)
    destinations: list[Destination] = Field(min_length=MAX_BUNDLES)

    def find(self, name: str) -> Destination | None:
        key = _norm(name)
        return next((d for d in self.destinations if _norm(d.name) == key), None)


@dataclass(frozen=True)
class Outline:
    """Where a bundle goes and the angle it takes, chosen before the bundle is written."""

    index: int
    destination: str
    country: str = ""
    theme: str = ""


@dataclass(frozen=True)
class BundleTask:
    preferences: Preferences
    index: int
    avoid: tuple[str, ...] = ()


@cache
def load_dataset() -> Dataset:
    """The bundled dataset, read once from the package data."""
    text = resources.files("tripkit.devstack").joinpath("data/destinations.json").read_text("utf-8")
    return Dataset.model_validate_json(text)


def parse_task(prompt: str) -> BundleTask | None:
    """The task in the prompt's last fenced json block, or None if there is no valid one."""
    blocks = _FENCED_JSON.findall(prompt)
    if not blocks:
        return None
    try:
        raw = json.loads(blocks[-1])
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("task") != "bundle":
        return None
    try:
        preferences = Preferences.model_validate(raw.get("preferences"))
    except ValidationError:
        return None
    index, avoid = raw.get("index"), raw.get("avoid", [])
    if not _whole(index, 0, MAX_BUNDLES - 1):
        return None
    if not isinstance(avoid, list) or len(avoid) >= MAX_BUNDLES:
        return None
    if not all(isinstance(a, str) and 0 < len(a) <= 200 for a in avoid):
        return None
    return BundleTask(preferences, index, tuple(avoid))


def answer(task: BundleTask) -> str:
    """The model's whole reply to a task, exactly as it will be streamed."""
    outline = choose(task.preferences, task.index, task.avoid)
    summary, bundle = make_bundle(task.preferences, task.index, outline)
    return "\n".join(
        [
            _dumps({"summary": summary.model_dump(by_alias=True, mode="json")}),
            _dumps({"bundle": bundle.model_dump(by_alias=True, mode="json")}),
        ]
    )


def plan(preferences: Preferences, count: int) -> list[Outline]:
    """``count`` distinct destinations, best match first (interests, then budget and pace)."""
    ranked = _ranked(preferences)[: min(count, MAX_BUNDLES)]
    return [_outline(preferences, i, d) for i, d in enumerate(ranked)]


def choose(preferences: Preferences, index: int, avoid: Sequence[str] = ()) -> Outline:
    """Bundle ``index``'s destination: the best match whose name is not in ``avoid``."""
    taken = {_norm(name) for name in avoid}
    best = next(d for d in _ranked(preferences) if _norm(d.name) not in taken)
    return _outline(preferences, index, best)


def _ranked(preferences: Preferences) -> list[Destination]:
    """Every destination, best match first (interests, then budget and pace)."""
    data = load_dataset()
    seed = _seed(preferences)
    per_day_eur = _to_eur(preferences.budget, preferences.currency) / (
        preferences.travellers * preferences.days
    )

    def score(dest: Destination) -> float:
        value = 10.0 * len(_matched_tags(preferences.interests, dest))
        ratio = dest.daily_cost_eur / per_day_eur
        value += 4.0 if ratio <= 1 else -min(12.0, 6.0 * (ratio - 1))
        value += 1.5 if dest.pace == preferences.pace else 0.0
        return value + _fraction(seed, dest.name)  # deterministic tie-break

    return sorted(data.destinations, key=score, reverse=True)


def _outline(preferences: Preferences, index: int, dest: Destination) -> Outline:
    return Outline(index, dest.name, dest.country, _theme(preferences, dest))


def make_bundle(preferences: Preferences, index: int, outline: Outline) -> tuple[Summary, Bundle]:
    """The summary and the full bundle for one outline; unknown destinations get generic days."""
    data = load_dataset()
    dest = data.find(outline.destination) or _generic(outline, preferences.pace)
    days = preferences.days
    pace = preferences.pace
    seed = _seed(preferences)
    theme = outline.theme or _theme(preferences, dest)
    title = f"{theme} in {outline.destination}"[:200]
    cost = _estimate(preferences, dest)
    highlights = dest.highlights[: _HIGHLIGHTS[pace]]

    bundle = Bundle(
        index=index,
        title=title,
        destination=outline.destination,
        country=outline.country or dest.country,
        nights=days - 1,
        estimated_cost=cost,
        currency=preferences.currency,
        highlights=highlights,
        itinerary=_itinerary(data, dest, days, pace, seed),
    )
    where = f"{outline.destination}, {bundle.country}" if bundle.country else outline.destination
    people = "traveller" if preferences.travellers == 1 else "travellers"
    text = " ".join(
        [
            f"{days} {'day' if days == 1 else 'days'} in {where}, "
            f"shaped around {_join([i.lower() for i in preferences.interests[:3]])}.",
            f"Expect {_join([_mid_sentence(h) for h in highlights[:3]])}.",
            f"The plan keeps a {pace} pace, with about {_ACTIVITIES_PER_DAY[pace]} things "
            "to do on a typical day.",
            f"Estimated total: {_money(cost)} {preferences.currency} for "
            f"{preferences.travellers} {people}, within the budget of "
            f"{_money(preferences.budget)} {preferences.currency}.",
        ]
    )
    summary = Summary(index=index, title=title, destination=outline.destination, text=text)
    return summary, bundle


def _itinerary(
    data: Dataset, dest: Destination, days: int, pace: Pace, seed: str
) -> list[ItineraryDay]:
    per_day = _ACTIVITIES_PER_DAY[pace]

    def day(number: int, template: DayPlan, trip: str = "", *, ends: bool = False) -> ItineraryDay:
        fill = {"city": dest.name, "trip": trip}
        chosen = template.activities[:per_day]
        if ends:  # arrival and departure days keep their closing step on any pace
            chosen = template.activities[: per_day - 1] + template.activities[-1:]
        return ItineraryDay(
            day=number,
            title=template.title.format(**fill),
            activities=[a.format(**fill) for a in chosen],
        )

    if days == 1:
        only = dest.days[0] if dest.days else data.filler_days[-1]
        return [day(1, only)]
    middle = _middle_days(data, dest, seed)
    result = [day(1, data.arrival_day, ends=True)]
    result += [day(n, *next(middle)) for n in range(2, days)]
    result.append(day(days, data.departure_day, ends=True))
    return result


def _middle_days(data: Dataset, dest: Destination, seed: str) -> Iterator[tuple[DayPlan, str]]:
    """The destination's own days (rotated by the seed), then day trips and free days."""
    if dest.days:
        start = int(seed[:8], 16) % len(dest.days)
        for template in dest.days[start:] + dest.days[:start]:
            yield template, ""
    trips = dest.day_trips or ["the surrounding area"]
    trip_day, *other_days = data.filler_days
    for n in counter():
        yield trip_day, trips[n % len(trips)]
        if other_days:
            yield other_days[n % len(other_days)], ""


def _estimate(preferences: Preferences, dest: Destination) -> float:
    spend_eur = (
        dest.daily_cost_eur
        * _SPEND_FACTOR[preferences.pace]
        * preferences.days
        * preferences.travellers
    )
    cost = min(_from_eur(spend_eur, preferences.currency), preferences.budget * _BUDGET_SHARE)
    return float(math.floor(cost)) if cost >= 100 else math.floor(cost * 100) / 100


def _matched_tags(interests: list[str], dest: Destination) -> list[str]:
    """The destination's tags the interests ask for, in the order of the interests."""
    synonyms = load_dataset().tag_synonyms
    tags = {_norm(t): t for t in dest.tags}
    places = {_norm(dest.name), _norm(dest.country), _norm(dest.region)}
    found: list[str] = []
    for interest in interests:
        key = _norm(interest)
        keys = [key, *key.split()] if " " in key else [key]
        for k in keys:
            candidates = (k, synonyms.get(k, k), k.removesuffix("s"), f"{k}s")
            hit = next((tags[c] for c in candidates if c in tags), None)
            if hit is None and k in places:
                hit = dest.name
            if hit is not None:
                if hit not in found:
                    found.append(hit)
                break
    return found


def _theme(preferences: Preferences, dest: Destination) -> str:
    tags = [t for t in _matched_tags(preferences.interests, dest) if t != dest.name]
    if not tags:
        tags = [t for t in dest.tags if t != "city"][:2]
    phrase = _join(tags[:3]) or "Sights"
    return phrase[:1].upper() + phrase[1:]


def _generic(outline: Outline, pace: Pace) -> Destination:
    name = outline.destination
    return Destination(
        name=name,
        country=outline.country,
        daily_cost_eur=_FALLBACK_DAILY_EUR,
        pace=pace,
        tags=[],
        highlights=[f"The old town of {name}", f"Local food in {name}", f"Views over {name}"],
        day_trips=["a nearby town", "the countryside"],
    )


def _seed(preferences: Preferences) -> str:
    canonical = preferences.model_dump_json(by_alias=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _fraction(seed: str, name: str) -> float:
    digest = hashlib.sha256(f"{seed}|{name}".encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def _rate(currency: str) -> float:
    """EUR per unit of ``currency``; unknown currencies are treated like EUR."""
    return load_dataset().eur_per_unit.get(currency, 1.0)


def _to_eur(amount: float, currency: str) -> float:
    return amount * _rate(currency)


def _from_eur(amount: float, currency: str) -> float:
    return amount / _rate(currency)


def _whole(value: object, low: int, high: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _norm(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _mid_sentence(text: str) -> str:
    return "the" + text[3:] if text.startswith("The ") else text


def _money(amount: float) -> str:
    return f"{amount:,.0f}" if amount >= 100 else f"{amount:,.2f}"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
