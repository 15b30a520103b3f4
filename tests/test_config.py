import os
from pathlib import Path

import pytest

from tripkit.config import load_settings, mask_url
from tripkit.errors import ConfigError

GUIDE_VARS = [
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "INNGEST_EVENT_KEY",
    "INNGEST_SIGNING_KEY",
    "OPENAI_API_KEY",
    "REDIS_URL",
    "TRIPKIT_SESSION_TTL",
    "TRIPKIT_REDIS_TRANSPORT",
    "OPENAI_BASE_URL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell may set any of these; the tests must not depend on it."""
    for name in list(os.environ):
        if name in GUIDE_VARS or name.startswith(("TRIPKIT_", "INNGEST_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)


def test_environment_then_env_local_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "UPSTASH_REDIS_REST_URL=https://from-env.upstash.io\nOPENAI_API_KEY=sk-from-env\n"
    )
    (tmp_path / ".env.local").write_text(
        "UPSTASH_REDIS_REST_URL=https://from-local.upstash.io\nUPSTASH_REDIS_REST_TOKEN=tok\n"
    )
    s = load_settings(tmp_path)
    assert s.upstash_redis_rest_url == "https://from-local.upstash.io"
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-from-env"
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "https://from-process.upstash.io")
    assert load_settings(tmp_path).upstash_redis_rest_url == "https://from-process.upstash.io"


def test_defaults_and_transport_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(tmp_path)
    assert (s.session_ttl, s.poll_interval) == (3600, 2.0)
    with pytest.raises(ConfigError, match="UPSTASH_REDIS_REST_URL"):
        _ = s.redis_transport_name
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "https://x.upstash.io")
    assert load_settings(tmp_path).redis_transport_name == "rest"
    monkeypatch.setenv("REDIS_URL", "rediss://default:pw@x.upstash.io:6379")
    assert load_settings(tmp_path).redis_transport_name == "resp"
    monkeypatch.setenv("TRIPKIT_REDIS_TRANSPORT", "rest")
    assert load_settings(tmp_path).redis_transport_name == "rest"


def test_secrets_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "tok-SECRET-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-2")
    monkeypatch.setenv("REDIS_URL", "redis://user:SECRET-3@h:6379/0")
    s = load_settings(tmp_path)
    shown = repr(s) + str(s) + str(s.describe())
    assert "SECRET" not in shown
    assert s.describe()["REDIS_URL"] == "redis://***@h:6379/0"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"
    # a password with characters that hide it from urlsplit is masked all the same
    assert mask_url("redis://:SECRET/x?y#z@h:6379") == "redis://***@h:6379"
    monkeypatch.setenv("REDIS_URL", "redis://:SECRET/pw@h:6379")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert "REDIS_URL" in str(info.value) and "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("UPSTASH_REDIS_REST_URL", "your-url.upstash.io", "http(s)://"),
        ("REDIS_URL", "http://x", "redis://"),
        ("TRIPKIT_SESSION_TTL", "an hour", "integer"),
        ("OPENAI_API_KEY", '"sk-SECRET-quoted"', "quotes"),
        ("INNGEST_SIGNING_KEY", "signkey-test-SECRET ", "whitespace"),
        ("TRIPKIT_REDIS_TRANSPORT", "carrier-pigeon", "resp"),
    ],
)
def test_malformed_values_name_the_variable_not_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    message = str(info.value)
    assert name in message and says in message and ".env.local" in message
    assert "SECRET" not in message


def test_role_and_load_knobs_default_and_refuse_nonsense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_settings(tmp_path)
    assert s.role == "all"
    assert (s.generation_concurrency, s.redis_max_connections, s.redis_pool_wait) == (10, 50, 1.0)
    monkeypatch.setenv("TRIPKIT_ROLE", "worker")
    assert load_settings(tmp_path).role == "worker"
    for name, value in (
        ("TRIPKIT_ROLE", "frontend"),
        ("TRIPKIT_GENERATION_CONCURRENCY", "0"),
        ("TRIPKIT_REDIS_MAX_CONNECTIONS", "many"),
        ("TRIPKIT_REDIS_POOL_WAIT", "-1"),
    ):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ConfigError, match=name) as info:
                load_settings(tmp_path)
            assert "Traceback" not in str(info.value)
