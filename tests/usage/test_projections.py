"""tripkit.usage.projections: what fits the free tier and what a month costs past it, on
hand-computed examples."""

from __future__ import annotations

import math

import pytest

from tripkit.usage.plans import plan
from tripkit.usage.projections import PerGeneration, free_tier_fit, projected_monthly_cost


def test_free_tier_fit_hand_computed() -> None:
    per = PerGeneration(bundles=3, duration_s=360, retries=0)
    # 2 s: 181 polls + 13 others (5 writes billed twice) = 194 commands; 5 steps, 6 executions.
    guide = free_tier_fit(plan("guide"), per, 2.0)
    assert guide["redis_commands_per_generation"] == 194
    assert guide["redis_bound_per_day"] == 51  # 10,000 / 194
    assert guide["inngest_bound_per_day"] == 33  # 1,000 runs / 30 days
    assert guide["fits_per_day"] == 33
    current = free_tier_fit(plan("current"), per, 2.0)
    assert current["redis_bound_per_day"] == 85  # 500,000 / 30 / 194
    assert current["inngest_bound_per_day"] == 277  # 50,000 / 30 / 6
    assert current["fits_per_day"] == 85
    # 10 s: 37 polls + 13 = 50 commands.
    slow = free_tier_fit(plan("current"), per, 10.0)
    assert slow["redis_bound_per_day"] == 333 and slow["fits_per_day"] == 277
    # Retried attempts are budgeted: one retry per generation -> 7 executions.
    retried = PerGeneration(bundles=3, duration_s=360, retries=1)
    assert free_tier_fit(plan("current"), retried, 2.0)["inngest_bound_per_day"] == 238


def test_projected_monthly_cost_hand_computed() -> None:
    per = PerGeneration(bundles=3, duration_s=360, retries=0, usd_openai=0.01)
    table = projected_monthly_cost(plan("current"), per, 1000, 2.0).set_index("item")
    # 194 x 1000 x 30 = 5.82M commands; 5.32M past 500K at $0.20 / 100K = $10.64.
    assert table.loc["commands", "monthly"] == 5_820_000
    assert table.loc["commands", "cost_usd"] == pytest.approx(10.64)
    assert table.loc["tokens (USD at list price)", "cost_usd"] == pytest.approx(300)
    assert math.isnan(table.loc["executions (retries counted)", "cost_usd"])  # no price known
    guide = projected_monthly_cost(plan("guide"), per, 100, 2.0).set_index("item")
    # Daily limit: 19,400 - 10,000 = 9,400 a day past it, x 30 = 282,000 -> $0.564.
    assert guide.loc["commands", "beyond_free"] == 282_000
    assert guide.loc["commands", "cost_usd"] == pytest.approx(0.564)
    assert guide.loc["runs", "cost_usd"] == 20  # 3,000 runs: the $20 plan
