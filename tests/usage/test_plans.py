"""tripkit.usage.plans: the limits and prices as data, and the boundary of the extra: the
setup checks read the plans without pandas."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tripkit.usage.plans import UsageError, load_plans, openai_prices, plan


def test_plan_profiles_match_plan_limits_doc() -> None:
    guide, current = plan("guide"), plan("current")
    assert guide.value("redis_commands_per_day") == 10_000
    assert guide.value("redis_storage_bytes") == 256 * 2**20
    assert guide.value("inngest_runs_per_month") == 1_000
    assert guide.value("inngest_steps_per_month") == 100_000
    assert guide.value("redis_usd_per_100k_commands") == 0.20
    assert current.value("redis_commands_per_month") == 500_000
    assert current.value("redis_storage_bytes") == 256 * 2**20
    assert current.value("redis_bandwidth_bytes_per_month") == 10 * 2**30
    assert current.value("redis_usd_per_100k_commands") == 0.20
    assert current.value("inngest_executions_per_month") == 50_000
    assert current.value("inngest_concurrent_steps") == 5
    assert current.value("inngest_events_per_month") == 500_000
    assert "2026-06-18" in current.cite("redis_commands_per_month")
    prices = openai_prices()
    assert (prices["gpt-4o-mini"]["input"], prices["gpt-4o-mini"]["output"]) == (0.15, 0.60)
    assert (prices["gpt-5.4-mini"]["input"], prices["gpt-5.4-mini"]["output"]) == (0.75, 4.50)


def test_every_number_has_a_source_and_a_date() -> None:
    data = load_plans()
    for profile in data["profiles"].values():
        for entry in profile["limits"].values():
            assert entry["source"] and entry["date"] and entry["label"] and entry["unit"]
            assert isinstance(entry["value"], int | float)
    for price in data["openai"]["models"].values():
        assert price["source"] and price["date"]


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="Known profiles: guide, current"):
        plan("nosuch")


def test_the_plans_and_the_checks_need_no_notebooks_extra() -> None:
    # As if the extra were not installed: importing any of its packages fails.
    code = (
        "import sys\n"
        "for name in ('pandas', 'matplotlib', 'ipywidgets', 'papermill', 'nbconvert'):\n"
        "    sys.modules[name] = None\n"
        "import tripkit.checks, tripkit.cli, tripkit.usage.plans\n"
        "print(tripkit.usage.plans.plan('current').value('redis_storage_bytes'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(float(256 * 2**20))
