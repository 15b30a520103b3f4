"""Typed errors whose messages tell the user what to check.

Every error tripkit raises on purpose derives from :class:`TripkitError`, so a CLI or a
notebook can catch one type and print ``str(err)`` without a traceback. Messages use the
words of the setup guide's troubleshooting section and never contain a secret.
"""

from __future__ import annotations


class TripkitError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing explanation."""

    remedy: str = ""

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        self.message = message
        if remedy is not None:
            self.remedy = remedy
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} {self.remedy}".strip()


class ConfigError(TripkitError):
    """A setting is missing or malformed; the message names the variable."""


class InvalidSessionId(TripkitError, ValueError):
    """A session id that tripkit could not have issued; never sent to Redis."""

    remedy = (
        "Session ids are 32 lowercase hex characters, as returned by POST /api/generate-bundles."
    )


class SessionNotFound(TripkitError, LookupError):
    """The session does not exist: unknown id, or expired after its TTL."""

    remedy = (
        "Sessions expire one hour after their last write. If this is unexpected, check the "
        "Upstash Redis credentials and that the Redis instance is active (not paused)."
    )


class IdempotencyKeyReused(TripkitError):
    """An ``Idempotency-Key`` came back with a different request body."""

    remedy = (
        "Send a new Idempotency-Key (a fresh UUID) for every new generation; reuse a key "
        "only to repeat the very same request."
    )


class StoreError(TripkitError):
    """Redis could not carry out a command."""


class RedisUnavailable(StoreError):
    """Nothing answered at the configured address, or the service answered 5xx."""

    remedy = (
        "Check the Upstash Redis credentials (UPSTASH_REDIS_REST_URL, or REDIS_URL) and that "
        "the Redis instance is active (is the database paused?)."
    )


class RedisTimeout(StoreError):
    """Redis did not answer within the configured timeout."""

    remedy = (
        "Redis did not answer in time: check the network to the Redis region, or raise "
        "TRIPKIT_REDIS_TIMEOUT. Is the database paused?"
    )


class RedisBusy(StoreError):
    """Every connection of this process to Redis was in use for the whole pool wait."""

    remedy = (
        "This process has more Redis calls in flight than TRIPKIT_REDIS_MAX_CONNECTIONS "
        "allows, usually because Redis is slow or the process is overloaded: retry shortly; "
        "if it persists, run the API and the worker in separate processes (README, "
        "'Deployment shapes') or lower TRIPKIT_GENERATION_CONCURRENCY."
    )


class RedisAuthError(StoreError):
    """The token or password was refused (``WRONGPASS``)."""

    remedy = (
        "Check the Upstash credentials: UPSTASH_REDIS_REST_TOKEN (or the password in "
        "REDIS_URL) must be the database's standard token, not the read-only one."
    )


class QuotaExceeded(StoreError):
    """Upstash refused the command because a plan limit was reached."""

    remedy = (
        "The Upstash plan's request limit is used up: wait for the limit to reset, raise the "
        "plan in the Upstash console, or poll less often (TRIPKIT_POLL_INTERVAL)."
    )


class CommandError(StoreError):
    """Redis rejected one command (wrong type, syntax, unsupported command)."""

    remedy = "This is a bug in tripkit or an incompatible Redis server; please report it."
