"""tripkit.jupyter.targets: notebook 01's real mode reads the project's .env.local from
``notebooks/`` and never gives a local stack's endpoints an all-clear."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SERVICE_PREFIXES

from tripkit import checks
from tripkit.checks import CheckStatus
from tripkit.devstack.stack import LocalStack
from tripkit.jupyter.targets import check_step
from tripkit.paths import ROOT_VAR


@pytest.fixture
def kernel_in_notebooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project (pyproject.toml at the top) whose kernel runs in notebooks/, with nothing
    of the developer's services in the environment; returns the project root."""
    for name in list(os.environ):
        if name.startswith(SERVICE_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.delenv(ROOT_VAR, raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    return tmp_path.resolve()


async def test_real_mode_fails_a_loopback_upstash_url_from_the_roots_env_local(
    stack: LocalStack, kernel_in_notebooks: Path
) -> None:
    """The offline stack's gateway with its right token, in the project's .env.local:
    the service answers, but checking the real services the URL is a failure."""
    env_local = kernel_in_notebooks / ".env.local"
    env_local.write_text(
        f"UPSTASH_REDIS_REST_URL={stack.rest_url}\nUPSTASH_REDIS_REST_TOKEN={stack.rest_token}\n"
    )
    assert stack.rest_url.startswith("http://127.0.0.1:")
    results = {r.id: r for r in await check_step(checks.CONFIGURATION, "real")}
    url = results["config.UPSTASH_REDIS_REST_URL"]
    assert url.status is CheckStatus.FAIL, url.detail
    assert "points at this machine, not Upstash" in url.detail
    assert url.detail.endswith(f"Source: {env_local}.")
    assert "upstash.io" in url.remedy and 'environment = "local"' in url.remedy
