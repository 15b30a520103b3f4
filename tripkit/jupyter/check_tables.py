"""The setup checks as notebook 01 shows them: a table per step, a verdict nbval can
compare, and the troubleshooting entries that apply.

Not named ``display``: a notebook that imported it would hide IPython's ``display()``.
pandas is imported inside the functions that draw tables, as the checks run without it.
"""

from __future__ import annotations

from typing import Any

from tripkit import checks
from tripkit.checks import CheckResult

__all__ = ["show_checks", "show_diagnoses", "verdict"]

_MARK = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "skip": "⏭ skip"}


def show_checks(results: list[CheckResult]) -> Any:
    """The results as a table: status, what was measured, and what to do next."""
    import pandas as pd

    rows = checks.summary_table(results)
    for row in rows:
        row["status"] = _MARK[row["status"]]
    frame = pd.DataFrame(rows).drop(columns=["step"])
    return frame.style.hide(axis="index").set_properties(**{"text-align": "left"})


def verdict(results: list[CheckResult]) -> str:
    """One line per check, status only: stable enough for nbval to compare."""
    return "\n".join(f"{r.status.value:<4}  {r.id}" for r in results)


def show_diagnoses(results: list[CheckResult]) -> Any:
    """The guide's troubleshooting entries, and whether the failures point at each."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "entry": d.entry,
                "applies": "❌ yes" if d.applies else "no",
                "failing checks": ", ".join(d.failing),
                "advice": d.advice,
            }
            for d in checks.diagnose(results)
        ]
    ).style.hide(axis="index")
