"""tripkit.jupyter.lab (`make lab`): which services the notebooks get, and how JupyterLab
is started."""

from __future__ import annotations

from pathlib import Path

from tripkit.jupyter.lab import SETTINGS, choose, jupyter_command


def test_a_running_tripkit_dev_is_used(tmp_path: Path) -> None:
    environ = {"TRIPKIT_API_URL": "http://127.0.0.1:8000"}
    assert choose("auto", tmp_path, environ)[:2] == ("local", False)


def test_an_env_local_means_the_real_services(tmp_path: Path) -> None:
    (tmp_path / ".env.local").write_text("UPSTASH_REDIS_REST_URL=https://x.upstash.io\n")
    environment, start, why = choose("auto", tmp_path, {})
    assert (environment, start) == ("real", False) and str(tmp_path / ".env.local") in why
    # asked for local, the offline stack is started even beside an .env.local
    assert choose("local", tmp_path, {})[:2] == ("local", True)


def test_nothing_configured_starts_the_offline_stack(tmp_path: Path) -> None:
    assert choose("auto", tmp_path, {})[:2] == ("local", True)


def test_jupyterlab_listens_on_loopback_with_a_token_and_no_calls_home(tmp_path: Path) -> None:
    command = jupyter_command(8888, "secret", tmp_path)
    assert "--ServerApp.ip=127.0.0.1" in command and "--IdentityProvider.token=secret" in command
    assert f"--ServerApp.root_dir={tmp_path}" in command
    assert f"--LabApp.app_settings_dir={SETTINGS}" in command
    assert (SETTINGS / "overrides.json").is_file()
