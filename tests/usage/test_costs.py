"""tripkit.usage.costs: the command-count formula against a real generation, and the pure
computations on hand-computed examples."""

from __future__ import annotations

import math
import time

import pytest
import redis
from helpers import generate_and_poll, run_record

from tripkit import keys
from tripkit.devstack.stack import LocalStack
from tripkit.devstack.testing import RedisCommandCounter
from tripkit.models import RunRecord
from tripkit.usage import costs
from tripkit.usage.history import generations_table
from tripkit.usage.plans import UsageError, openai_prices

# --------------------------------------------------------------------------- against real servers


def test_command_formula_matches_a_real_generation(stack: LocalStack) -> None:
    counter = RedisCommandCounter(stack.redis_url)
    raw = redis.Redis.from_url(stack.redis_url)
    try:
        counter.reset()
        interval = 0.2
        session_id, polls = generate_and_poll(stack.api_url, interval)
        run_key = keys.run_key("tripkit", session_id)
        # The run record is written just after the final status: wait for it (EXISTS is
        # not a GET or SET, so it does not disturb the counts compared below).
        deadline = time.monotonic() + 10
        while not raw.exists(run_key):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        counts = counter.counts()
        record = RunRecord.model_validate_json(raw.get(run_key) or b"{}")
    finally:
        counter.close()
        raw.close()

    assert record.bundles is not None
    formula = costs.redis_commands_per_generation(record.bundles, polls)
    sets = formula["create"] + formula["writes"] + formula["run_record"]
    gets = formula["worker_reads"] + formula["polls"]
    assert counts.get("SET") == sets == 4 + record.bundles
    assert counts.get("EVAL") == formula["write_scripts"] == 2 + record.bundles
    assert counts.get("GET") == gets == polls  # the worker reads nothing
    assert counts.get("PUBLISH") == formula["publishes"] == 2 + record.bundles
    assert counts["SET"] + counts["EVAL"] + counts["GET"] + counts["PUBLISH"] == formula["total"]
    # Polls estimated from the record's duration are an upper bound: request latency
    # stretches each interval (on a loaded machine, by more than the interval itself, so
    # how close the real count comes depends on the load and is not asserted).
    row = generations_table([record]).iloc[0]
    estimated = costs.polls_per_generation(row["duration_s"], interval)
    assert 2 <= polls <= estimated + 1


# --------------------------------------------------------------------------- per generation


def test_a_failed_runs_record_has_gaps_not_errors() -> None:
    failed = RunRecord.model_validate(
        {
            "sessionId": "b" * 32,
            "runId": "01FAIL",
            "failedAt": "2026-06-01T10:00:09+00:00",
            "status": "failed",
            "error": "Generation failed: the model API answered 401.",
        }
    )
    table = generations_table([failed])
    row = table.iloc[0]
    assert row["status"] == "failed" and math.isnan(row["duration_s"])
    estimated = costs.estimates(table, 2.0, 0).iloc[0]
    assert estimated["executions_min"] == 3  # the failed run + the on_failure run and its step


@pytest.mark.parametrize(
    ("duration", "interval", "polls"),
    [(0, 2, 1), (10, 2, 6), (10.5, 2, 7), (360, 2, 181), (360, 10, 37), (math.nan, 2, 0)],
)
def test_polls_per_generation(duration: float, interval: float, polls: int) -> None:
    assert costs.polls_per_generation(duration, interval) == polls


def test_redis_commands_per_generation() -> None:
    # The local stack's demo: 3 bundles, 29 polls -> 7 SET + 5 EVAL + 5 PUBLISH + 29 GET.
    parts = costs.redis_commands_per_generation(3, 29)
    assert parts == {
        "create": 1,
        "writes": 5,
        "write_scripts": 5,
        "publishes": 5,
        "worker_reads": 0,  # the start event carries what the worker used to read
        "run_record": 1,
        "polls": 29,
        "total": 46,
    }
    # A global database with 2 read regions bills each write 3 times; scripts, PUBLISHes
    # and reads once.
    assert costs.redis_commands_per_generation(3, 29, read_regions=2)["total"] == 21 + 10 + 29
    # Failed after 1 summary: running, 1 summary, fail = on_failure's GET + a write, each
    # write a script and announced.
    failed = costs.redis_commands_per_generation(0, 4, failed=True, summaries=1)
    assert failed["writes"] == failed["write_scripts"] == failed["publishes"] == 3
    assert failed["worker_reads"] == 1 and failed["total"] == 16


def test_redis_commands_by_mode() -> None:
    poll = costs.redis_commands_by_mode("poll", 5, 181)
    assert poll == {
        "create": 1,
        "worker_reads": 0,
        "writes": 7,
        "write_scripts": 7,  # each write is a check-and-set script: EVAL + its SET
        "publishes": 7,  # the store announces every write, polled or not
        "run_record": 1,
        "polls": 181,
        "total": 204,
    }
    # tests/test_push.py measures this: SET 9, EVAL 7, PUBLISH 7, GET 1, SUBSCRIBE 1.
    push = costs.redis_commands_by_mode("push", 5, 181)  # polls do not apply
    assert push["publishes"] == 7 * costs.PUBLISHES_PER_SESSION_WRITE
    assert push["push_clients"] == costs.COMMANDS_PER_PUSH_CLIENT == 2
    assert push["total"] == 9 + 7 + 7 + 2 == 25 and "polls" not in push
    assert costs.redis_commands_by_mode("push", 5, writes=9, clients=2)["total"] == 11 + 18 + 4
    assert costs.redis_commands_by_mode("poll", 5, 10, clients=2)["polls"] == 20
    with pytest.raises(UsageError, match="poll' or 'push"):
        costs.redis_commands_by_mode("sse", 5)  # type: ignore[arg-type]


def test_executions_are_one_run_plus_one_step_per_bundle() -> None:
    assert costs.steps_per_generation(5) == 5
    assert costs.executions_per_generation(costs.steps_per_generation(5)) == 6
    assert costs.executions_per_generation(3, retries=2) == 6  # every attempt, worst case
    assert costs.executions_per_generation(3, retries=2, worst_case=False) == 4


# --------------------------------------------------------------------------- tokens


def test_cost_by_model_hand_computed() -> None:
    records = [
        run_record("a" * 32, usage=[{"model": "gpt-4o-mini", "promptTokens": 10**6}]),
        run_record(
            "b" * 32,
            usage=[
                {"model": "gpt-4o-mini", "completionTokens": 10**6},
                {"model": "gpt-5.4-mini", "promptTokens": 200_000, "completionTokens": 100_000},
            ],
        ),
    ]
    table, notes = costs.tokens_by_model(generations_table(records), openai_prices())
    cost = table.set_index("model")["cost_usd"]
    assert cost["gpt-4o-mini"] == pytest.approx(0.15 + 0.60)
    assert cost["gpt-5.4-mini"] == pytest.approx(0.2 * 0.75 + 0.1 * 4.50)
    assert notes == []


def test_unknown_model_costs_nan_with_a_note() -> None:
    records = [run_record("a" * 32, usage=[{"model": "my-finetune", "promptTokens": 5}])]
    table, notes = costs.tokens_by_model(generations_table(records), openai_prices())
    assert math.isnan(table.set_index("model").loc["my-finetune", "cost_usd"])
    assert len(notes) == 1 and "my-finetune" in notes[0]
    assert math.isnan(costs.token_cost("my-finetune", 1, 1, openai_prices()))


# --------------------------------------------------------------------------- periods


def test_peak_concurrency_and_observed_rate() -> None:
    records = [
        run_record("a" * 32),
        run_record("b" * 32, startedAt="2026-06-01T10:04:00+00:00"),  # overlaps a
        run_record(
            "c" * 32,
            queuedAt="2026-06-01T11:00:00+00:00",
            startedAt="2026-06-01T11:00:00+00:00",
            completedAt="2026-06-01T11:01:00+00:00",
        ),
    ]
    table = generations_table(records)
    assert costs.peak_concurrency(table) == 2
    end = costs.parse_period_end("2026-06-01")  # the end of that day
    assert costs.observed_rate(table, 30, end) == 3.0  # less than a day of data: per 1 day
    assert costs.observed_rate(table.iloc[:0], 30, end) == 0.0
