"""tripkit.usage.projections: what fits the free tier and what a month costs past it, on
hand-computed examples."""

from __future__ import annotations

import math

import pytest

from tripkit.usage.plans import plan
from tripkit.usage.projections import (
    ORIGINAL_WORKLOAD,
    PerGeneration,
    free_tier_fit,
    mode_comparison,
    projected_monthly_cost,
)


def test_free_tier_fit_hand_computed() -> None:
    per = PerGeneration(bundles=3, duration_s=360, retries=0)
    # 2 s: 181 polls + 7 others + 5 EVAL + 5 PUBLISH = 198 commands; 3 steps (one per
    # bundle), 4 executions.
    guide = free_tier_fit(plan("guide"), per, 2.0)
    assert guide["redis_commands_per_generation"] == 198
    assert guide["redis_bound_per_day"] == 50  # 10,000 / 198
    assert guide["inngest_bound_per_day"] == 33  # 1,000 runs / 30 days
    assert guide["fits_per_day"] == 33
    current = free_tier_fit(plan("current"), per, 2.0)
    assert current["redis_bound_per_day"] == 84  # 500,000 / 30 / 198
    assert current["inngest_bound_per_day"] == 416  # 50,000 / 30 / 4
    assert current["fits_per_day"] == 84
    # 10 s: 37 polls + 17 = 54 commands.
    slow = free_tier_fit(plan("current"), per, 10.0)
    assert slow["redis_bound_per_day"] == 308 and slow["fits_per_day"] == 308
    # Retried attempts are budgeted: one retry per generation -> 5 executions.
    retried = PerGeneration(bundles=3, duration_s=360, retries=1)
    assert free_tier_fit(plan("current"), retried, 2.0)["inngest_bound_per_day"] == 333


def test_mode_comparison_at_the_original_workload() -> None:
    """5 bundles, 6 minutes, one client: the capacity issue 9 sets its targets on."""
    assert (ORIGINAL_WORKLOAD.bundles, ORIGINAL_WORKLOAD.duration_s) == (5, 360)
    rows = {(r.profile, r.mode): r for r in mode_comparison([plan("current"), plan("guide")])}
    poll, push = rows["current", "poll"], rows["current", "push"]
    # both: create 1 + writes 7 + EVAL 7 + PUBLISH 7 + run record 1 = 23 (the worker
    # reads nothing); then poll: 181 polls = 204; push: the client's GET and SUBSCRIBE = 25
    assert poll.redis_commands_per_generation == 204
    assert push.redis_commands_per_generation == 25
    assert poll.executions_per_generation == push.executions_per_generation == 6  # 1 + 5
    assert poll.redis_bound_per_month == 2450  # 500,000 / 204
    assert poll.inngest_bound_per_month == push.inngest_bound_per_month == 8333  # 50,000 / 6
    assert (poll.fits_per_month, poll.bound_by) == (2450, "Redis")
    assert push.redis_bound_per_month == 20_000  # 500,000 / 25
    assert (push.fits_per_month, push.bound_by) == (8333, "Inngest")
    assert push.fits_per_month >= 8000  # issue 9's target
    # The guide's older tiers: 1,000 runs a month bind both modes.
    guide = rows["guide", "push"]
    assert (guide.fits_per_month, guide.bound_by) == (1000, "Inngest")
    assert rows["guide", "poll"].redis_bound_per_month == 1470  # 10,000 x 30 / 204


def test_mode_comparison_budgets_retries_and_more_clients() -> None:
    per = PerGeneration(bundles=5, duration_s=360, retries=2)
    rows = {r.mode: r for r in mode_comparison([plan("current")], per, clients=3)}
    assert rows["poll"].redis_commands_per_generation == 23 + 3 * 181
    assert rows["push"].redis_commands_per_generation == 23 + 3 * 2
    assert rows["push"].executions_per_generation == 8
    assert rows["push"].inngest_bound_per_month == 6250


def test_projected_monthly_cost_hand_computed() -> None:
    per = PerGeneration(bundles=3, duration_s=360, retries=0, usd_openai=0.01)
    table = projected_monthly_cost(plan("current"), per, 1000, 2.0).set_index("item")
    # 198 x 1000 x 30 = 5.94M commands; 5.44M past 500K at $0.20 / 100K = $10.88.
    assert table.loc["commands", "monthly"] == 5_940_000
    assert table.loc["commands", "cost_usd"] == pytest.approx(10.88)
    assert table.loc["tokens (USD at list price)", "cost_usd"] == pytest.approx(300)
    assert math.isnan(table.loc["executions (retries counted)", "cost_usd"])  # no price known
    guide = projected_monthly_cost(plan("guide"), per, 100, 2.0).set_index("item")
    # Daily limit: 19,800 - 10,000 = 9,800 a day past it, x 30 = 294,000 -> $0.588.
    assert guide.loc["commands", "beyond_free"] == 294_000
    assert guide.loc["commands", "cost_usd"] == pytest.approx(0.588)
    assert guide.loc["runs", "cost_usd"] == 20  # 3,000 runs: the $20 plan
