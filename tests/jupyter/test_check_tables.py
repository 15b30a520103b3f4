"""tripkit.jupyter.check_tables: the configuration step's checks, with nothing configured,
as notebook 01 shows them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tripkit import checks
from tripkit.jupyter.check_tables import show_checks, show_diagnoses, verdict


async def test_an_unconfigured_step_as_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("UPSTASH_", "REDIS_URL", "INNGEST_", "OPENAI_", "TRIPKIT_")):
            monkeypatch.delenv(name)
    ids = dict(checks.GUIDE_STEPS)[checks.CONFIGURATION]
    results = await checks.check_environment(tmp_path, only=ids)
    assert any(r.status is checks.CheckStatus.FAIL for r in results)

    lines = verdict(results).splitlines()
    assert [line.split() for line in lines] == [[r.status.value, r.id] for r in results]
    page = show_checks(results).to_html()
    assert "❌ fail" in page and all(r.id in page for r in results)
    assert "step" not in show_checks(results).data.columns
    diagnoses = show_diagnoses(results).data
    assert list(diagnoses.columns) == ["entry", "applies", "failing checks", "advice"]
    assert len(diagnoses) == len(checks.diagnose(results))
