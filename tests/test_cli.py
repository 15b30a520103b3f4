"""The ``tripkit`` command as a user runs it: a real subprocess, exit status, stdout, stderr.

Every run gets an environment without the caller's real service variables and a fresh
working directory, so no ``.env.local`` of the developer's is read.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import httpx
import pytest
from helpers import free_port, run_cli

from tripkit.devstack.stack import LocalStack

SIMPLE_PREFERENCES = {"interests": ["food"], "tripLengthDays": 2, "budget": 800, "bundleCount": 1}


def settings_table(stdout: str) -> dict[str, str]:
    table = {}
    for line in stdout.splitlines():
        name, _, value = line.partition("  ")
        table[name.strip()] = value.strip()
    return table


def test_config_shows_secrets_as_set_or_unset(tmp_path: Path) -> None:
    token = "fake-upstash-token-" + secrets.token_hex(12)
    password = "pw" + secrets.token_hex(8)
    result = run_cli(
        "config",
        cwd=tmp_path,
        UPSTASH_REDIS_REST_URL="https://example-db.upstash.io",
        UPSTASH_REDIS_REST_TOKEN=token,
        REDIS_URL=f"redis://default:{password}@redis.example.com:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    assert password not in result.stdout + result.stderr
    table = settings_table(result.stdout)
    assert table["UPSTASH_REDIS_REST_TOKEN"] == "set"
    assert table["UPSTASH_REDIS_REST_URL"] == "https://example-db.upstash.io"
    assert table["REDIS_URL"] == "redis://***@redis.example.com:6379/0"
    assert table["OPENAI_API_KEY"] == "unset"
    assert table["INNGEST_SIGNING_KEY"] == "unset"
    assert table["redis transport"] == "resp"  # REDIS_URL wins over the REST pair


def test_config_reads_dotenv_local_from_the_working_directory(tmp_path: Path) -> None:
    key = "sk-" + secrets.token_hex(16)
    (tmp_path / ".env.local").write_text(f"OPENAI_API_KEY={key}\nTRIPKIT_SESSION_TTL=120\n")
    result = run_cli("config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert key not in result.stdout
    table = settings_table(result.stdout)
    assert table["OPENAI_API_KEY"] == "set"
    assert table["TRIPKIT_SESSION_TTL"] == "120"
    assert table["redis transport"].startswith("none (No Redis is configured.")


def test_config_with_a_malformed_value_names_it_without_traceback(tmp_path: Path) -> None:
    result = run_cli("config", cwd=tmp_path, REDIS_URL="http://not-redis:6379")
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("bad_id", ["not-a-session", "tripkit:*", "A" * 32, "0" * 33])
def test_session_with_a_malformed_id_exits_2(tmp_path: Path, bad_id: str) -> None:
    # A Redis that nothing listens on: a malformed id must fail before any command.
    result = run_cli(
        "session", bad_id, cwd=tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert result.returncode == 2, result.stdout
    assert "Malformed session id" in result.stderr
    assert "32 lowercase hex" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_session_with_nothing_at_the_redis_url_exits_2_with_a_hint(tmp_path: Path) -> None:
    result = run_cli(
        "session",
        secrets.token_hex(16),
        cwd=tmp_path,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        TRIPKIT_REDIS_TIMEOUT="2",
    )
    assert result.returncode == 2, result.stdout
    assert "paused" in result.stderr
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_session_without_any_redis_configured_exits_2(tmp_path: Path) -> None:
    result = run_cli("session", secrets.token_hex(16), cwd=tmp_path)
    assert result.returncode == 2
    assert "No Redis is configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_session_prints_a_session_over_both_transports(tmp_path: Path, stack: LocalStack) -> None:
    response = httpx.post(
        f"{stack.api_url}/api/generate-bundles", json=SIMPLE_PREFERENCES, timeout=10
    )
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    served = httpx.get(f"{stack.api_url}/api/session/{session_id}", timeout=10).json()

    via_resp = run_cli("session", session_id, cwd=tmp_path, REDIS_URL=stack.redis_url)
    via_rest = run_cli(
        "session",
        session_id,
        cwd=tmp_path,
        UPSTASH_REDIS_REST_URL=stack.rest_url,
        UPSTASH_REDIS_REST_TOKEN=stack.rest_token,
    )
    for result in (via_resp, via_rest):
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed["sessionId"] == session_id
        assert printed["preferences"] == served["preferences"]
        assert printed["createdAt"] == served["createdAt"]

    unknown = run_cli("session", secrets.token_hex(16), cwd=tmp_path, REDIS_URL=stack.redis_url)
    assert unknown.returncode == 2
    assert "not found" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    wrong_token = run_cli(
        "session",
        session_id,
        cwd=tmp_path,
        UPSTASH_REDIS_REST_URL=stack.rest_url,
        UPSTASH_REDIS_REST_TOKEN="not-the-token",
    )
    assert wrong_token.returncode == 2
    assert "UPSTASH_REDIS_REST_TOKEN" in wrong_token.stderr
    assert "not-the-token" not in wrong_token.stderr
    assert "Traceback" not in wrong_token.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = run_cli(
        "demo", "--poll-interval", "0.2", "--chunk-delay", "0", cwd=tmp_path, timeout=150
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "completed" in out
    assert re.search(r"#\s+bundle\s+destination\s+nights\s+cost", out), out
    assert re.search(r"time to sessionId\s+\d+ ms", out), out
    commands = re.search(r"Redis commands: (\d+) \(([^)]*)\); polls: (\d+)", out)
    assert commands, out
    total, detail, polls = int(commands[1]), commands[2], int(commands[3])
    counts = {name: int(n) for name, n in (part.split() for part in detail.split(", "))}
    assert total == sum(counts.values())
    assert polls >= 1
    assert counts["GET"] == polls  # one per poll; the worker reads nothing
    # 3 bundles: create + running + 3 summaries + complete + run record.
    assert counts["SET"] == 7, counts
    assert "Traceback" not in out + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_push_follows_by_push_and_counts_its_commands(tmp_path: Path) -> None:
    result = run_cli("demo", "--push", "--chunk-delay", "0", cwd=tmp_path, timeout=150)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "following by push" in out
    assert "[id 6] completed" in out  # 3 bundles: ids 1, 2, 3..5, then 6
    assert re.search(r"#\s+bundle\s+destination\s+nights\s+cost", out), out
    commands = re.search(r"Redis commands: (\d+) \(([^)]*)\); push events: (\d+)", out)
    assert commands, out
    counts = {name: int(n) for name, n in (part.split() for part in commands[2].split(", "))}
    # create + 5 writes (each a SET inside an EVAL) + run record; a PUBLISH per write;
    # the reader's SUBSCRIBE and GET; the worker reads nothing.
    assert counts == {"SET": 7, "EVAL": 5, "PUBLISH": 5, "SUBSCRIBE": 1, "GET": 1}, counts
    assert int(commands[3]) == 6
    assert "Traceback" not in out + result.stderr
