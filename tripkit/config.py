"""One settings object, read from the environment, then ``.env.local``, then ``.env``.

Names are exactly the setup guide's (``UPSTASH_REDIS_REST_URL``, ``INNGEST_EVENT_KEY``,
...), plus ``REDIS_URL`` and tripkit's own ``TRIPKIT_*`` knobs. Secrets are
:class:`pydantic.SecretStr`, so they show as ``**********`` in every repr; errors name
the variable and where to set it, never its value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tripkit.errors import ConfigError
from tripkit.paths import project_root

#: Files read after the environment, highest priority first (the guide keeps
#: credentials in ``.env.local``).
ENV_FILES = (".env.local", ".env")

TransportName = Literal["auto", "resp", "rest"]
#: What one app process serves: ``all`` (small setups), or one side of a split deployment
#: (``api``: the public routes; ``worker``: the Inngest serve endpoint that runs the steps).
Role = Literal["all", "api", "worker"]

_WHERE = "Set it in the environment or in .env.local (see README.md, 'Configuration')."


def mask_url(url: str) -> str:
    """Drop the credentials from a URL so it can be shown.

    Done on the text, not with ``urlsplit``: a password holding ``/``, ``?`` or ``#``
    hides the ``user:password@`` part from the parser, and it must be masked all the same.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


class Settings(BaseSettings):
    """Everything tripkit reads from its environment."""

    model_config = SettingsConfigDict(
        # pydantic-settings gives later files priority, so list .env before .env.local.
        env_file=tuple(reversed(ENV_FILES)),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        populate_by_name=True,
        validate_default=True,
    )

    # --- the guide's variables -------------------------------------------------------
    upstash_redis_rest_url: str | None = Field(default=None, alias="UPSTASH_REDIS_REST_URL")
    upstash_redis_rest_token: SecretStr | None = Field(
        default=None, alias="UPSTASH_REDIS_REST_TOKEN"
    )
    inngest_event_key: SecretStr | None = Field(default=None, alias="INNGEST_EVENT_KEY")
    inngest_signing_key: SecretStr | None = Field(default=None, alias="INNGEST_SIGNING_KEY")
    inngest_signing_key_fallback: SecretStr | None = Field(
        default=None, alias="INNGEST_SIGNING_KEY_FALLBACK"
    )
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")

    # --- other services' conventional variables --------------------------------------
    redis_url: SecretStr | None = Field(default=None, alias="REDIS_URL")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    inngest_base_url: str | None = Field(default=None, alias="INNGEST_BASE_URL")

    # --- tripkit's knobs -------------------------------------------------------------
    role: Role = Field(default="all", alias="TRIPKIT_ROLE")
    generation_concurrency: int = Field(
        default=10, ge=1, le=1000, alias="TRIPKIT_GENERATION_CONCURRENCY"
    )
    run_deadline: int = Field(default=1800, ge=1, le=7 * 24 * 3600, alias="TRIPKIT_RUN_DEADLINE")
    redis_transport: TransportName = Field(default="auto", alias="TRIPKIT_REDIS_TRANSPORT")
    redis_timeout: float = Field(default=5.0, gt=0, le=120, alias="TRIPKIT_REDIS_TIMEOUT")
    redis_max_connections: int = Field(
        default=50, ge=1, le=1000, alias="TRIPKIT_REDIS_MAX_CONNECTIONS"
    )
    redis_pool_wait: float = Field(default=1.0, gt=0, le=60, alias="TRIPKIT_REDIS_POOL_WAIT")
    session_ttl: int = Field(default=3600, ge=60, le=7 * 24 * 3600, alias="TRIPKIT_SESSION_TTL")
    poll_interval: float = Field(default=2.0, gt=0, le=300, alias="TRIPKIT_POLL_INTERVAL")
    push_keepalive: float = Field(default=15.0, gt=0, le=300, alias="TRIPKIT_PUSH_KEEPALIVE")
    key_prefix: str = Field(
        default="tripkit",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        alias="TRIPKIT_KEY_PREFIX",
    )
    openai_model: str = Field(
        default="gpt-5.4-mini",
        validation_alias=AliasChoices("TRIPKIT_OPENAI_MODEL", "OPENAI_MODEL"),
    )

    @field_validator("upstash_redis_rest_url", "openai_base_url", "inngest_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        raw = value.get_secret_value().strip()
        parts = urlsplit(raw)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(
                "has a malformed host:port (a password with / ? # or @ must be %-encoded)"
            ) from None
        return SecretStr(raw)

    @field_validator(
        "upstash_redis_rest_token",
        "inngest_event_key",
        "inngest_signing_key",
        "inngest_signing_key_fallback",
        "openai_api_key",
    )
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.strip() == "":
            return None
        if raw != raw.strip():
            raise ValueError("has leading or trailing whitespace (a stray space or newline?)")
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raise ValueError("is wrapped in quotes; remove them")
        return value

    @property
    def redis_transport_name(self) -> Literal["resp", "rest"]:
        """Which transport :func:`tripkit.transport.connect` will use.

        ``REDIS_URL`` wins over the Upstash REST pair when both are set, because a
        long-lived server is cheaper on one TCP connection than on HTTPS per command;
        ``TRIPKIT_REDIS_TRANSPORT`` overrides.
        """
        if self.redis_transport != "auto":
            return self.redis_transport
        if self.redis_url is not None:
            return "resp"
        if self.upstash_redis_rest_url is not None:
            return "rest"
        raise ConfigError(
            "No Redis is configured.",
            remedy="Set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN (as in the setup "
            "guide), or REDIS_URL, in the environment or in .env.local. For the offline "
            "stack, run `tripkit dev` and use the values it prints.",
        )

    def describe(self) -> dict[str, str]:
        """What is configured, safe to print: URLs without passwords, secrets as set/unset."""

        def flag(secret: SecretStr | None) -> str:
            return "set" if secret is not None else "unset"

        redis = self.redis_url.get_secret_value() if self.redis_url else None
        return {
            "UPSTASH_REDIS_REST_URL": (
                mask_url(self.upstash_redis_rest_url) if self.upstash_redis_rest_url else "unset"
            ),
            "UPSTASH_REDIS_REST_TOKEN": flag(self.upstash_redis_rest_token),
            "REDIS_URL": mask_url(redis) if redis else "unset",
            "INNGEST_EVENT_KEY": flag(self.inngest_event_key),
            "INNGEST_SIGNING_KEY": flag(self.inngest_signing_key),
            "INNGEST_SIGNING_KEY_FALLBACK": flag(self.inngest_signing_key_fallback),
            "INNGEST_BASE_URL": self.inngest_base_url or "Inngest Cloud",
            "OPENAI_API_KEY": flag(self.openai_api_key),
            "OPENAI_BASE_URL": (
                mask_url(self.openai_base_url) if self.openai_base_url else "default"
            ),
            "TRIPKIT_OPENAI_MODEL": self.openai_model,
            "TRIPKIT_ROLE": self.role,
            "TRIPKIT_GENERATION_CONCURRENCY": str(self.generation_concurrency),
            "TRIPKIT_RUN_DEADLINE": str(self.run_deadline),
            "TRIPKIT_REDIS_TRANSPORT": self.redis_transport,
            "TRIPKIT_REDIS_TIMEOUT": str(self.redis_timeout),
            "TRIPKIT_REDIS_MAX_CONNECTIONS": str(self.redis_max_connections),
            "TRIPKIT_REDIS_POOL_WAIT": str(self.redis_pool_wait),
            "TRIPKIT_KEY_PREFIX": self.key_prefix,
            "TRIPKIT_SESSION_TTL": str(self.session_ttl),
            "TRIPKIT_POLL_INTERVAL": str(self.poll_interval),
            "TRIPKIT_PUSH_KEEPALIVE": str(self.push_keepalive),
        }


def _alias_of(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is None:
        return field
    if info.alias:
        return info.alias
    choices = info.validation_alias
    if isinstance(choices, AliasChoices):
        return str(choices.choices[0])
    return field


def load_settings(env_dir: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings, turning validation errors into a :class:`ConfigError`.

    ``env_dir`` is where ``.env.local`` and ``.env`` are looked for (default: the
    project root, :func:`tripkit.paths.project_root`, so a notebook's kernel in
    ``notebooks/`` reads the same file as the shell). ``overrides`` take precedence over
    everything, by field name.
    """
    kwargs: dict[str, Any] = dict(overrides)
    folder = Path(env_dir) if env_dir is not None else project_root()
    kwargs["_env_file"] = tuple(str(folder / name) for name in reversed(ENV_FILES))
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = err["loc"][0] if err["loc"] else "settings"
            name = str(loc) if str(loc).isupper() else _alias_of(str(loc))
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name} {message}")
        raise ConfigError(
            "Invalid configuration: " + "; ".join(problems) + ".", remedy=_WHERE
        ) from None
