"""tripkit.paths: one project root, whichever folder a command or a kernel starts in."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

from tripkit.config import load_settings
from tripkit.paths import ROOT_VAR, history_csv, in_root, project_root, reports_dir, shown


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project layout: pyproject.toml at the top, a kernel's cwd in notebooks/."""
    monkeypatch.delenv(ROOT_VAR, raising=False)
    monkeypatch.delenv("TRIPKIT_HISTORY_CSV", raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def test_a_kernel_in_notebooks_finds_the_folder_above(project: Path) -> None:
    assert project_root(project / "notebooks") == project.resolve()
    assert project_root(project) == project.resolve()


def test_a_deployment_folder_is_marked_by_its_env_local(tmp_path: Path) -> None:
    (tmp_path / "srv" / "notebooks").mkdir(parents=True)
    (tmp_path / "srv" / ".env.local").write_text("")
    assert project_root(tmp_path / "srv" / "notebooks") == (tmp_path / "srv").resolve()


def test_tripkit_root_wins(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.setenv(ROOT_VAR, str(elsewhere))
    assert project_root(project / "notebooks") == elsewhere.resolve()


def test_reports_and_history_resolve_under_the_root(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "notebooks")
    root = project.resolve()
    assert reports_dir() == root / "reports"
    assert history_csv() == root / "reports" / "data" / "runs.csv"
    assert in_root("/abs/x.csv") == Path("/abs/x.csv")
    assert shown(root / "reports" / "data" / "runs.csv") == "reports/data/runs.csv"
    monkeypatch.setenv("TRIPKIT_HISTORY_CSV", "elsewhere.csv")
    assert history_csv() == root / "elsewhere.csv"


def test_settings_read_the_roots_env_local_from_notebooks(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPSTASH_REDIS_REST_URL", raising=False)
    (project / ".env.local").write_text("UPSTASH_REDIS_REST_URL=https://from-root.upstash.io\n")
    monkeypatch.chdir(project / "notebooks")
    assert load_settings().upstash_redis_rest_url == "https://from-root.upstash.io"


def test_the_cli_reads_the_same_env_local_from_a_subfolder(project: Path) -> None:
    (project / ".env.local").write_text("UPSTASH_REDIS_REST_URL=https://from-root.upstash.io\n")
    result = run_cli("config", cwd=project / "notebooks")
    assert result.returncode == 0, result.stderr
    assert "https://from-root.upstash.io" in result.stdout
