"""The offline model's planner: the dataset, the prompt contract, and plausible answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tripkit.devstack.trip_planner import (
    NOT_A_TRIP_REPLY,
    BundleTask,
    Outline,
    answer,
    choose,
    load_dataset,
    make_bundle,
    parse_task,
    plan,
)
from tripkit.models import MAX_BUNDLES, MAX_TRIP_DAYS, Bundle, Preferences, Summary


def prefs(**changes: Any) -> Preferences:
    base: dict[str, Any] = {"interests": ["food"], "tripLengthDays": 5, "budget": 2000}
    return Preferences.model_validate({**base, **changes})


def fenced(value: Any) -> str:
    return f"```json\n{json.dumps(value)}\n```"


def test_dataset_is_complete() -> None:
    data = load_dataset()
    names = [d.name for d in data.destinations]
    assert 25 <= len(names) <= 40
    assert len(set(names)) == len(names)
    assert {d.region for d in data.destinations} >= {"Europe", "Asia", "Americas", "Africa"}
    for dest in data.destinations:
        assert dest.tags and len(dest.highlights) >= 3 and dest.days and dest.day_trips
        assert all(len(day.activities) == 4 for day in dest.days), dest.name


def test_parse_takes_the_last_fenced_block() -> None:
    bundle = {"task": "bundle", "preferences": prefs().model_dump(by_alias=True, mode="json")}
    prompt = (
        "An example:\n"
        + fenced({**bundle, "index": 3})
        + "\nNow:\n"
        + fenced({**bundle, "index": 1, "count": 3, "avoid": ["Kyoto"]})
    )
    task = parse_task(prompt)
    assert isinstance(task, BundleTask)
    assert (task.index, task.avoid) == (1, ("Kyoto",))


@pytest.mark.parametrize(
    "change",
    [
        {"task": "plan", "count": 2},  # the planning call of older tripkits is gone
        {"index": MAX_BUNDLES},
        {"index": "1"},
        {"avoid": "Kyoto"},
        {"avoid": [""]},
        {"avoid": ["x"] * MAX_BUNDLES},
        {"preferences": {"interests": ["x"]}},
    ],
)
def test_a_task_outside_the_contract_is_not_a_trip(change: dict[str, Any]) -> None:
    task = {"task": "bundle", "preferences": prefs().model_dump(by_alias=True, mode="json")}
    assert parse_task(fenced({**task, "index": 0, **change})) is None


def test_bundles_asked_in_turn_avoiding_the_earlier_ones_follow_the_ranking() -> None:
    """One call per bundle gives the destinations a single planning call would have."""
    choice = prefs(interests=["food", "museums"], bundleCount=5)
    ranked = plan(choice, 5)
    taken: list[str] = []
    for index in range(5):
        outline = choose(choice, index, taken)
        assert outline == ranked[index]
        taken.append(outline.destination)
    assert len(set(taken)) == 5
    assert choose(choice, 0, ["not a place"]) == ranked[0]


def test_ten_distinct_destinations() -> None:
    chosen = plan(prefs(), MAX_BUNDLES)
    assert len({o.destination for o in chosen}) == MAX_BUNDLES


def test_small_budgets_pick_cheap_places_and_stay_within_budget() -> None:
    tight = prefs(interests=["culture"], budget=400, travellers=2, tripLengthDays=5)
    first = plan(tight, 3)
    assert {o.destination for o in first} <= {"Hanoi", "Ubud", "Bangkok", "Marrakech", "Cusco"}
    for outline in [*first, Outline(index=3, destination="Zermatt", country="Switzerland")]:
        _, bundle = make_bundle(tight, outline.index, outline)
        assert 0 < bundle.estimated_cost <= tight.budget


def test_cost_follows_the_currency() -> None:
    outline = Outline(index=0, destination="Lisbon", country="Portugal")
    eur = make_bundle(prefs(budget=10_000), 0, outline)[1].estimated_cost
    jpy = make_bundle(prefs(budget=1_000_000, currency="JPY"), 0, outline)[1]
    assert jpy.currency == "JPY"
    assert jpy.estimated_cost == pytest.approx(eur / 0.0061, rel=0.01)


@pytest.mark.parametrize("days", [1, 2, 9, MAX_TRIP_DAYS])
@pytest.mark.parametrize("pace", ["relaxed", "packed"])
def test_itinerary_has_one_day_per_trip_day(days: int, pace: str) -> None:
    choice = prefs(tripLengthDays=days, pace=pace, budget=100_000)
    outline = plan(choice, 1)[0]
    summary, bundle = make_bundle(choice, 0, outline)
    assert [d.day for d in bundle.itinerary] == list(range(1, days + 1))
    assert bundle.nights == days - 1
    per_day = 2 if pace == "relaxed" else 4
    assert all(len(d.activities) == per_day for d in bundle.itinerary)
    assert summary.title == bundle.title


def test_unknown_destination_gets_a_generic_but_valid_bundle() -> None:
    outline = Outline(index=2, destination="Atlantis", country="Ocean", theme="Myths")
    summary, bundle = make_bundle(prefs(), 2, outline)
    assert bundle.destination == "Atlantis"
    assert bundle.title == "Myths in Atlantis"
    assert len(bundle.itinerary) == 5
    assert "Atlantis" in summary.text


def test_answer_is_what_the_worker_parses() -> None:
    choice = prefs(interests=["beaches", "nightlife"])
    first_two = [o.destination for o in plan(choice, 2)]
    lines = answer(BundleTask(choice, 2, tuple(first_two))).split("\n")
    assert len(lines) == 2
    summary = Summary.model_validate(json.loads(lines[0])["summary"])
    bundle = Bundle.model_validate(json.loads(lines[1])["bundle"])
    assert summary.index == bundle.index == 2
    assert bundle.destination == plan(choice, 3)[2].destination not in first_two
    assert "trips" in NOT_A_TRIP_REPLY
