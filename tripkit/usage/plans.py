"""The plans' limits and prices: ``tripkit/data/plan_limits.json``, each number with its
source and date.

A report picks a profile (``guide``: the setup guide's older free tiers, ``current``: the
newest found) and shows the others beside it. No pandas here, so the setup checks
(:func:`tripkit.checks.free_tier_data_size`) read the same data without the notebooks extra.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from tripkit.errors import TripkitError

__all__ = [
    "DAYS_PER_MONTH",
    "Plan",
    "UsageError",
    "load_plans",
    "openai_prices",
    "plan",
    "profiles",
]

#: Monthly limits are pro-rated over, and projections cover, a month of this many days.
DAYS_PER_MONTH = 30


class UsageError(TripkitError):
    """A report input is wrong (unknown profile, missing file, bad value).

    Defined here, in the one usage module without pandas, so that the plan lookup can
    raise it; the other usage modules import it from here.
    """


@cache
def _plans_text() -> str:
    return resources.files("tripkit").joinpath("data/plan_limits.json").read_text("utf-8")


def load_plans() -> dict[str, Any]:
    """The plan limits and prices shipped with tripkit (a fresh copy each call)."""
    data: dict[str, Any] = json.loads(_plans_text())
    return data


@dataclass(frozen=True)
class Plan:
    """One profile's limits: ``value(key)`` is the number, ``limits[key]`` its source."""

    name: str
    label: str
    limits: Mapping[str, Mapping[str, Any]]

    def value(self, key: str) -> float | None:
        entry = self.limits.get(key)
        if entry is None or entry.get("value") is None:
            return None
        return float(entry["value"])

    def cite(self, key: str) -> str:
        entry = self.limits.get(key)
        return f"{entry['source']}; {entry['date']}" if entry else ""

    @property
    def redis_commands_per_day(self) -> float | None:
        """The Redis allowance per day: a daily limit, or a monthly one pro rata."""
        daily = self.value("redis_commands_per_day")
        monthly = self.value("redis_commands_per_month")
        return daily if daily is not None else (monthly / DAYS_PER_MONTH if monthly else None)

    @property
    def redis_commands_per_month(self) -> float | None:
        monthly = self.value("redis_commands_per_month")
        daily = self.value("redis_commands_per_day")
        return monthly if monthly is not None else (daily * DAYS_PER_MONTH if daily else None)


def profiles() -> list[str]:
    """The profile names in the data's order, which is the order the report shows them."""
    return list(load_plans()["profiles"])


def plan(profile: str) -> Plan:
    """The named profile's limits; raises :class:`UsageError` naming the known ones."""
    known = load_plans()["profiles"]
    if profile not in known:
        raise UsageError(
            f"Unknown plan profile {profile!r}.",
            remedy=f"Known profiles: {', '.join(known)} (tripkit/data/plan_limits.json).",
        )
    entry = known[profile]
    return Plan(profile, entry["label"], entry["limits"])


def openai_prices() -> dict[str, dict[str, Any]]:
    """USD per 1M tokens by model: ``input``, ``cached_input``, ``output``, source, date."""
    models: dict[str, dict[str, Any]] = load_plans()["openai"]["models"]
    return models
