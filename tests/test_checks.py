"""`tripkit check` and tripkit.checks against real servers: green on the offline stack, red
with the right remedy for each kind of wrong setting, and never a secret in the output."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from helpers import SERVICE_PREFIXES, free_port, run_cli
from pydantic import SecretStr

from tripkit.checks import (
    GUIDE_STEPS,
    TROUBLESHOOTING,
    CheckResult,
    CheckStatus,
    check_environment,
    diagnose,
    format_text,
    read_environment,
    run_checks,
    select,
    summary_table,
)
from tripkit.checks.endpoints import reach
from tripkit.config import Settings, load_settings
from tripkit.devstack.model_server import BackgroundServer, ModelServerConfig
from tripkit.devstack.stack import LocalStack, StackConfig
from tripkit.paths import ROOT_VAR

ALL_IDS = [i for _, ids in GUIDE_STEPS for i in ids]


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No service variable of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith(SERVICE_PREFIXES):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(tmp)


def by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.id: r for r in results}


def applies(results: list[CheckResult]) -> set[str]:
    return {d.entry for d in diagnose(results) if d.applies}


def assert_no_secret(text: str, *values: str) -> None:
    for value in values:
        assert value not in text, "a secret value appears in the output"


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# --- green on the offline stack ------------------------------------------------------------


async def test_every_check_passes_or_skips_on_the_stack(
    stack: LocalStack, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_from(stack.env, clean_env, tmp_path)  # TRIPKIT_API_URL from env
    results = await run_checks(settings, local_stack=True)
    assert [r.id for r in results] == ALL_IDS
    bad = [
        (r.id, r.detail) for r in results if r.status not in (CheckStatus.PASS, CheckStatus.SKIP)
    ]
    assert bad == []
    got = by_id(results)
    for check_id in (
        "config.settings",
        "upstash.ping",
        "upstash.roundtrip",
        "upstash.memory",
        "redis.ping",
        "inngest.event_api",
        "inngest.serve",
        "inngest.function",
        "openai.model",
        "app.health",
    ):
        assert got[check_id].status is CheckStatus.PASS, (check_id, got[check_id].detail)
    # dev mode: the keys the local stack does not need are skipped, not failed
    assert got["config.INNGEST_SIGNING_KEY"].status is CheckStatus.SKIP
    assert got["inngest.signing"].status is CheckStatus.SKIP
    assert "dev mode, 2 function(s)" in got["inngest.serve"].detail
    assert "of the 256 MB free-tier data size" in got["upstash.memory"].detail
    assert got["config.OPENAI_API_KEY"].detail == (
        f"Set (sk-…, {len(stack.openai_key)} chars). Source: the environment."
    )
    assert all(r.remedy == "" for r in results if r.status is CheckStatus.PASS)
    assert applies(results) == set()
    # the round trip cleaned up after itself
    leftovers = await _keys(stack, "tripkit:check:*")
    assert leftovers == []

    rows = summary_table(results)
    assert list(rows[0]) == ["step", "check", "status", "detail", "remedy"]
    assert [row["check"] for row in rows] == ALL_IDS
    json.dumps([r.as_dict() for r in results])
    assert_no_secret(format_text(results, diagnose(results)), stack.rest_token, stack.openai_key)


async def _keys(stack: LocalStack, pattern: str) -> list[bytes]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        return [k if isinstance(k, bytes) else k.encode() for k in await client.keys(pattern)]
    finally:
        await client.aclose()


def test_cli_check_json_is_green_on_the_stack(stack: LocalStack, tmp_path: Path) -> None:
    result = run_cli("check", "--json", "--local", cwd=tmp_path, env=stack.env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [r["id"] for r in report["results"]] == ALL_IDS
    assert {r["status"] for r in report["results"]} <= {"pass", "skip"}
    assert [d["entry"] for d in report["diagnoses"]] == list(TROUBLESHOOTING)
    assert not any(d["applies"] for d in report["diagnoses"])
    assert "Traceback" not in result.stderr
    assert_no_secret(result.stdout + result.stderr, stack.rest_token, stack.openai_key)


# --- red, with the right remedy -------------------------------------------------------------


async def test_wrong_upstash_token_fails_with_the_credentials_remedy(
    stack: LocalStack, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = "wrong-token-" + secrets.token_hex(12)
    env = {**stack.env, "UPSTASH_REDIS_REST_TOKEN": wrong}
    results = await run_checks(settings_from(env, clean_env, tmp_path), only=["upstash"])
    assert [r.id for r in results] == ["upstash.ping", "upstash.roundtrip", "upstash.memory"]
    for r in results:
        assert r.status is CheckStatus.FAIL, r
        assert "check the upstash credentials" in r.remedy.lower()
        assert_no_secret(r.detail + r.remedy, wrong)
    assert "Session not found" in applies(results)


async def test_unreachable_rest_url_asks_whether_the_database_is_paused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"UPSTASH_REDIS_REST_URL": dead_url(), "UPSTASH_REDIS_REST_TOKEN": "t" * 32}
    results = await run_checks(
        settings_from(env, clean_env, tmp_path), only=["upstash.ping", "upstash.roundtrip"]
    )
    for r in results:
        assert r.status is CheckStatus.FAIL
        assert "Cannot reach Upstash" in r.detail
        assert "is the database paused?" in r.remedy


async def test_app_down_fails_the_app_checks(
    stack: LocalStack, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = settings_from(stack.env, clean_env, tmp_path)
    url = dead_url()
    results = by_id(
        await run_checks(settings, api_url=url, only=["app", "inngest.serve", "inngest.function"])
    )
    assert results["app.health"].status is CheckStatus.FAIL
    assert f"Cannot reach {url}/healthz" in results["app.health"].detail
    assert "deployed" in results["app.health"].remedy
    assert results["inngest.serve"].status is CheckStatus.FAIL
    # the function is registered at the stack's URL, not at this one
    assert results["inngest.function"].status is CheckStatus.WARN
    assert "registered correctly" in results["inngest.function"].remedy
    assert "Polling never completes" in applies(list(results.values()))


async def test_an_unreachable_inngest_server_is_named_not_the_app(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = dead_url()
    settings = settings_from({"INNGEST_BASE_URL": url}, clean_env, tmp_path)
    (result,) = await run_checks(settings, only=["inngest.function"])
    assert result.status is CheckStatus.FAIL
    assert f"Cannot reach {url}/v1/functions" in result.detail
    assert "INNGEST_BASE_URL" in result.remedy and "deployed" not in result.remedy


async def test_a_hanging_service_is_bounded_by_the_timeout(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        env = {"UPSTASH_REDIS_REST_URL": url, "UPSTASH_REDIS_REST_TOKEN": "t" * 32}
        settings = settings_from(env, clean_env, tmp_path)
        started = time.monotonic()
        results = await run_checks(settings, api_url=url, only=["upstash.ping", "app"], timeout=0.5)
        assert time.monotonic() - started < 3
    assert [r.status for r in results] == [CheckStatus.FAIL, CheckStatus.FAIL]


@pytest.fixture(scope="module")
def strict_model_server() -> Iterator[BackgroundServer]:
    """A model server that accepts only the key ``sk-right``."""
    with BackgroundServer(ModelServerConfig(api_key=SecretStr("sk-right"))) as server:
        yield server


async def test_openai_key_and_model(
    strict_model_server: BackgroundServer, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base = {"OPENAI_BASE_URL": strict_model_server.base_url}
    wrong = "sk-wrong-" + secrets.token_hex(12)
    results = await run_checks(
        settings_from({**base, "OPENAI_API_KEY": wrong}, clean_env, tmp_path), only=["openai"]
    )
    [result] = results
    assert result.status is CheckStatus.FAIL
    assert "HTTP 401" in result.detail
    assert "check openai_api_key" in result.remedy.lower()
    assert_no_secret(result.detail + result.remedy, wrong, wrong[-4:] + ".")
    assert applies(results) == {"Worker times out"}

    right = settings_from({**base, "OPENAI_API_KEY": "sk-right"}, clean_env, tmp_path)
    [result] = await run_checks(right, only=["openai.model"])
    assert result.status is CheckStatus.PASS, result.detail
    assert "gpt-5.4-mini available" in result.detail

    unknown = load_settings(tmp_path, openai_model="gpt-nonexistent")
    [result] = await run_checks(unknown, only=["openai.model"])
    assert result.status is CheckStatus.FAIL
    assert "gpt-nonexistent is not available" in result.detail
    assert "model not available to this key" in result.remedy.lower()

    clean_env.setenv("OPENAI_BASE_URL", dead_url() + "/v1")
    [result] = await run_checks(load_settings(tmp_path), only=["openai.model"])
    assert result.status is CheckStatus.FAIL
    assert "Cannot reach the model API" in result.detail


# --- the variables ---------------------------------------------------------------------------

HEX = secrets.token_hex(32)
GOOD_SIGNING_KEY = f"signkey-test-{HEX}"


@pytest.mark.parametrize(
    ("env", "check_id", "status", "says"),
    [
        ({"INNGEST_SIGNING_KEY": "signkey_your_key_here"}, "config.INNGEST_SIGNING_KEY",
         CheckStatus.FAIL, "placeholder format `signkey_...`"),
        ({"INNGEST_SIGNING_KEY": "signkey_" + HEX}, "config.INNGEST_SIGNING_KEY",
         CheckStatus.FAIL, "placeholder format `signkey_...`"),
        ({"INNGEST_SIGNING_KEY": "evt_" + HEX}, "config.INNGEST_SIGNING_KEY",
         CheckStatus.FAIL, "holds an event key"),
        ({"INNGEST_EVENT_KEY": GOOD_SIGNING_KEY, "INNGEST_SIGNING_KEY": "A" * 86},
         "config.INNGEST_EVENT_KEY", CheckStatus.FAIL, "holds a signing key"),
        ({"INNGEST_EVENT_KEY": GOOD_SIGNING_KEY, "INNGEST_SIGNING_KEY": "A" * 86},
         "config.INNGEST_SIGNING_KEY", CheckStatus.FAIL, "the keys look swapped"),
        ({"INNGEST_SIGNING_KEY": "signkey-test-" + "zz" * 32}, "config.INNGEST_SIGNING_KEY",
         CheckStatus.FAIL, "not hexadecimal"),
        ({"INNGEST_SIGNING_KEY": GOOD_SIGNING_KEY}, "config.INNGEST_SIGNING_KEY",
         CheckStatus.PASS, f"signkey-test-…, {len(GOOD_SIGNING_KEY)} chars"),
        ({"INNGEST_EVENT_KEY": "evt_your_key_here"}, "config.INNGEST_EVENT_KEY",
         CheckStatus.FAIL, "placeholder"),
        ({"INNGEST_EVENT_KEY": "evt_" + HEX}, "config.INNGEST_EVENT_KEY",
         CheckStatus.WARN, "evt_"),
        ({}, "config.INNGEST_SIGNING_KEY", CheckStatus.FAIL, "not set"),
        ({"INNGEST_BASE_URL": "http://127.0.0.1:8288"}, "config.INNGEST_SIGNING_KEY",
         CheckStatus.SKIP, "dev mode"),
        ({"OPENAI_API_KEY": "key-" + HEX}, "config.OPENAI_API_KEY", CheckStatus.WARN, "sk-"),
        ({"OPENAI_API_KEY": "sk-proj-" + HEX}, "config.OPENAI_API_KEY", CheckStatus.PASS,
         "sk-proj-…"),
        ({"UPSTASH_REDIS_REST_URL": "http://eu1-fine-cat.upstash.io"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.FAIL, "https only"),
        ({"UPSTASH_REDIS_REST_URL": "http://redis-gateway.internal"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.WARN, "private network address"),
        ({"UPSTASH_REDIS_REST_URL": "http://redis.acme.io"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.FAIL, "https only"),
        ({"UPSTASH_REDIS_REST_URL": "https://127.0.0.1:8079"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.FAIL, "points at this machine"),
        ({"UPSTASH_REDIS_REST_URL": "http://[::1]:8079"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.FAIL, "points at this machine"),
        ({"UPSTASH_REDIS_REST_URL": "https://10.1.2.3"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.WARN, "private network address"),
        ({"UPSTASH_REDIS_REST_URL": "https://your-url.upstash.io"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.FAIL, "placeholder"),
        ({"UPSTASH_REDIS_REST_URL": "https://eu1-fine-cat.upstash.io"},
         "config.UPSTASH_REDIS_REST_URL", CheckStatus.PASS, "https://eu1-fine-cat.upstash.io"),
        ({"REDIS_URL": "redis://127.0.0.1:6379"}, "config.UPSTASH_REDIS_REST_URL",
         CheckStatus.SKIP, "REDIS_URL is used instead"),
    ],
)  # fmt: skip
async def test_variable_checks(
    env: dict[str, str],
    check_id: str,
    status: CheckStatus,
    says: str,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    [result] = await run_checks(settings_from(env, clean_env, tmp_path), only=[check_id])
    assert result.status is status, result.detail
    assert says in result.detail
    if status in (CheckStatus.FAIL, CheckStatus.WARN):
        assert result.remedy
    assert HEX not in result.detail + result.remedy


async def test_quotes_and_spaces_are_named_not_raised(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """load_settings rejects these; the checks read the raw values and say what is wrong."""
    (tmp_path / ".env.local").write_text(
        f"INNGEST_SIGNING_KEY=' {GOOD_SIGNING_KEY}'\nINNGEST_BASE_URL=http://127.0.0.1:8288\n"
    )
    clean_env.setenv("OPENAI_API_KEY", '"sk-quoted"')
    results = by_id(await check_environment(tmp_path, only=["config"]))
    assert results["config.settings"].status is CheckStatus.FAIL
    assert "INNGEST_SIGNING_KEY" in results["config.settings"].detail
    assert "quotes/spaces removed from INNGEST_SIGNING_KEY, OPENAI_API_KEY" in (
        results["config.settings"].detail
    )
    assert results["config.INNGEST_SIGNING_KEY"].status is CheckStatus.FAIL
    assert "whitespace" in results["config.INNGEST_SIGNING_KEY"].detail
    assert results["config.OPENAI_API_KEY"].status is CheckStatus.FAIL
    assert "wrapped in quotes" in results["config.OPENAI_API_KEY"].detail
    text = format_text(list(results.values()), [])
    assert_no_secret(text, HEX, "sk-quoted")


# --- no false all-clear: the real services, and where each value came from --------------------


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("http://127.0.0.1:8079", "local"),
        ("http://127.8.9.10", "local"),
        ("http://localhost:8288", "local"),
        ("https://LOCALHOST.", "local"),
        ("http://[::1]:9000/v1", "local"),
        ("http://0.0.0.0:8288", "local"),
        ("http://my-mac.local:6379", "local"),
        ("http://api.localhost", "local"),
        ("http://169.254.1.2", "local"),
        ("redis://:secret@127.0.0.1:6379/0", "local"),
        ("http://10.0.0.5", "private"),
        ("http://172.16.4.1:8080", "private"),
        ("http://192.168.1.20:8288", "private"),
        ("http://[fd00::1]", "private"),
        ("http://redis.internal", "private"),
        ("https://eu1-fine-cat.upstash.io", "public"),
        ("https://api.openai.com/v1", "public"),
        ("https://8.8.8.8", "public"),
        ("not a url", "public"),
    ],
)
def test_reach_tells_this_machine_from_a_private_network(url: str, where: str) -> None:
    assert reach(url) == where


async def test_real_mode_fails_local_endpoints_from_env_local(
    stack: LocalStack, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A project's .env.local holding the offline stack's values: checked as the real
    services, every endpoint on this machine fails, named with the file it came from,
    though the services answer; checked as the stack, the same values pass."""
    names = ("UPSTASH_REDIS_REST_URL", "INNGEST_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY")
    env_local = tmp_path / ".env.local"
    env_local.write_text("".join(f"{n}={stack.env[n]}\n" for n in names))
    token = stack.env["UPSTASH_REDIS_REST_TOKEN"]
    clean_env.setenv("UPSTASH_REDIS_REST_TOKEN", token)

    results = by_id(await check_environment(tmp_path, only=["config", "upstash.ping"]))
    url = results["config.UPSTASH_REDIS_REST_URL"]
    assert url.status is CheckStatus.FAIL
    assert "points at this machine, not Upstash" in url.detail
    assert url.detail.endswith(f"Source: {env_local}.") and url.detail.count(str(env_local)) == 1
    assert "upstash.io" in url.remedy and "tripkit check --local" in url.remedy
    overall = results["config.settings"]
    assert overall.status is CheckStatus.FAIL
    for name in ("INNGEST_BASE_URL", "OPENAI_BASE_URL"):
        assert f"{name} (127.0.0.1:" in overall.detail
    assert "point at this machine" in overall.detail and str(env_local) in overall.detail
    assert "unset INNGEST_BASE_URL" in overall.remedy
    # the token came from the environment; its value is never shown
    assert results["config.UPSTASH_REDIS_REST_TOKEN"].status is CheckStatus.PASS
    assert "Source: the environment." in results["config.UPSTASH_REDIS_REST_TOKEN"].detail
    assert f"Source: {env_local}." in results["config.OPENAI_API_KEY"].detail
    # the service itself answers: the configuration check is what stops the all-clear
    assert results["upstash.ping"].status is CheckStatus.PASS
    text = format_text(list(results.values()), diagnose(list(results.values())))
    assert_no_secret(text, token, stack.openai_key)

    local = by_id(await check_environment(tmp_path, only=["config"], local_stack=True))
    assert local["config.settings"].status is CheckStatus.PASS
    assert local["config.UPSTASH_REDIS_REST_URL"].status is CheckStatus.PASS
    assert "the offline stack" in local["config.UPSTASH_REDIS_REST_URL"].detail


async def test_an_exported_local_endpoint_is_blamed_on_the_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The environment wins over .env.local: the remedy says to unset the export."""
    (tmp_path / ".env.local").write_text(
        "INNGEST_BASE_URL=https://inngest.acme.io\n"
        "UPSTASH_REDIS_REST_URL=https://eu1-fine-cat.upstash.io\n"
        f"UPSTASH_REDIS_REST_TOKEN={HEX}\n"
    )
    clean_env.setenv("INNGEST_BASE_URL", "http://localhost:8288")
    [result] = await check_environment(tmp_path, only=["config.settings"])
    assert result.status is CheckStatus.FAIL
    assert "INNGEST_BASE_URL (localhost:8288, from the environment)" in result.detail
    assert "came from the environment, which wins over .env.local" in result.remedy

    clean_env.setenv("INNGEST_BASE_URL", "http://192.168.1.20:8288")
    [result] = await check_environment(tmp_path, only=["config.settings"])
    assert result.status is CheckStatus.WARN
    assert "private network address" in result.detail


async def test_an_unset_variable_says_where_it_was_looked_for(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    [result] = await check_environment(tmp_path, only=["config.OPENAI_API_KEY"])
    assert result.status is CheckStatus.FAIL
    expected = f"{tmp_path / '.env.local'} and {tmp_path / '.env'}"
    assert f"Looked in the environment, {expected}." in result.detail


async def test_without_a_folder_the_project_roots_env_local_is_read_from_a_subfolder(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A kernel runs in notebooks/: the dotenv files are the project root's, as for the
    settings, never the working directory's."""
    clean_env.delenv(ROOT_VAR, raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / ".env.local").write_text(f"UPSTASH_REDIS_REST_TOKEN={HEX}\n")
    clean_env.chdir(tmp_path / "notebooks")
    raw = read_environment(None)
    assert raw.get("UPSTASH_REDIS_REST_TOKEN") == HEX
    [token, key] = await check_environment(
        None, only=["config.UPSTASH_REDIS_REST_TOKEN", "config.OPENAI_API_KEY"]
    )
    assert token.detail.endswith(f"Source: {tmp_path.resolve() / '.env.local'}.")
    assert key.status is CheckStatus.FAIL and f"{tmp_path.resolve() / '.env.local'}" in key.detail


def test_cli_check_fails_the_stack_unless_told_it_is_local(
    stack: LocalStack, tmp_path: Path
) -> None:
    result = run_cli("check", "--only", "config", cwd=tmp_path, env=stack.env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "points at this machine" in result.stdout
    assert "Source: the environment." in result.stdout
    assert (
        run_cli("check", "--only", "config", "--local", cwd=tmp_path, env=stack.env).returncode == 0
    )


def test_select_takes_ids_and_prefixes() -> None:
    assert select(["upstash"]) == ["upstash.ping", "upstash.roundtrip", "upstash.memory"]
    assert select(["app.health", "redis"]) == ["redis.ping", "app.health"]
    assert select(None) == ALL_IDS
    with pytest.raises(ValueError, match="nope"):
        select(["nope"])
    assert set(ALL_IDS) >= {i for ids in TROUBLESHOOTING.values() for i in ids}


# --- the CLI, red ------------------------------------------------------------------------------


def test_cli_check_exits_1_with_the_remedy_and_no_secret(stack: LocalStack, tmp_path: Path) -> None:
    wrong = "wrong-token-" + secrets.token_hex(12)
    env = {
        **stack.env,
        "UPSTASH_REDIS_REST_TOKEN": wrong,
        "TRIPKIT_REDIS_TRANSPORT": "rest",
        "INNGEST_SIGNING_KEY": "signkey_" + HEX,
    }
    result = run_cli("check", "--api-url", dead_url(), cwd=tmp_path, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Check the Upstash credentials" in result.stdout
    assert "placeholder format `signkey_...`" in result.stdout
    assert '"Session not found"' in result.stdout
    assert '"Function not executing"' in result.stdout
    assert "Traceback" not in out
    assert_no_secret(out, wrong, HEX, stack.openai_key)


# --- signed production mode -------------------------------------------------------------------


async def test_signing_key_against_a_dev_mode_app_fails(
    stack: LocalStack, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {**stack.env, "INNGEST_SIGNING_KEY": GOOD_SIGNING_KEY, "INNGEST_EVENT_KEY": "e" * 40}
    results = by_id(
        await run_checks(
            settings_from(env, clean_env, tmp_path), only=["inngest.serve", "inngest.signing"]
        )
    )
    assert results["inngest.serve"].status is CheckStatus.FAIL
    assert "runs in dev mode" in results["inngest.serve"].detail
    assert results["inngest.signing"].status is CheckStatus.FAIL
    assert "ignores signatures" in results["inngest.signing"].detail


@pytest.fixture(scope="module")
def signed_stack() -> Iterator[tuple[LocalStack, str]]:
    key = "signkey-test-" + secrets.token_hex(32)
    config = StackConfig(chunk_delay=0.0, signing_key=key)
    with LocalStack(config) as running:
        yield running, key


@pytest.mark.slow
async def test_signed_production_mode(
    signed_stack: tuple[LocalStack, str], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack, key = signed_stack
    assert stack.event_key is not None  # signed mode: the stack's executor takes only this key
    env = {**stack.env, "INNGEST_SIGNING_KEY": key, "INNGEST_EVENT_KEY": stack.event_key}
    results = await run_checks(settings_from(env, clean_env, tmp_path), local_stack=True)
    got = by_id(results)
    assert [r.id for r in results if r.status is CheckStatus.FAIL] == []
    assert got["inngest.signing"].status is CheckStatus.PASS
    assert "answer signature verified" in got["inngest.signing"].detail
    assert got["inngest.serve"].status is CheckStatus.PASS
    assert "cloud mode, 2 function(s)" in got["inngest.serve"].detail
    assert got["inngest.event_api"].status is CheckStatus.PASS
    assert_no_secret(format_text(results, diagnose(results)), key, signing_hex(key))

    other = "signkey-test-" + secrets.token_hex(32)
    clean_env.setenv("INNGEST_SIGNING_KEY", other)
    results = await run_checks(load_settings(tmp_path), only=["inngest.serve", "inngest.signing"])
    got = by_id(results)
    assert got["inngest.signing"].status is CheckStatus.FAIL
    assert "the keys differ" in got["inngest.signing"].detail
    assert "signing key matches" in got["inngest.signing"].remedy
    assert got["inngest.serve"].status is CheckStatus.PASS  # reachable, in the right mode
    assert "Function not executing" in applies(results)


def signing_hex(key: str) -> str:
    return key.split("-", 2)[2]
