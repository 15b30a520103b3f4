"""The executor's knobs and limits: one frozen value, checked when built."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from tripkit import signing
from tripkit.devstack.executor.protocol import ServerKind
from tripkit.errors import ConfigError

DEFAULT_BACKOFF: tuple[float, ...] = (15.0, 30.0, 60.0, 120.0, 300.0)
DEFAULT_UNREACHABLE_BACKOFF: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0)
DEDUP_WINDOW = timedelta(hours=24)
MAX_EVENT_BYTES = 3 * 1024 * 1024
MAX_DEDUP_IDS = 100_000  # ids remembered for dedup; beyond that the oldest are forgotten

Backoff = Sequence[float] | Callable[[int], float]


@dataclass(frozen=True)
class ExecutorConfig:
    """Knobs of the local executor; durations are in seconds.

    ``backoff`` gives the wait after failed attempt ``n`` (0-based): a list (its last
    value repeats) or a function. ``jitter`` adds up to that fraction on top, like the
    real server. Connection-level failures (refused, reset, 502-504, an answer that is
    not from the SDK) do not use attempts: they are retried on ``unreachable_backoff``
    for up to ``unreachable_budget`` seconds, so an app that restarts is picked up.
    """

    host: str = "127.0.0.1"
    port: int = 8288
    backoff: Backoff = DEFAULT_BACKOFF
    jitter: float = 0.1
    signing_key: str | None = field(default=None, repr=False)
    signing_key_fallback: str | None = field(default=None, repr=False)
    event_key: str | None = field(default=None, repr=False)
    request_timeout: float = 300.0
    unreachable_budget: float = 60.0
    unreachable_backoff: Sequence[float] = DEFAULT_UNREACHABLE_BACKOFF
    max_sleep: float = 24 * 3600.0
    max_runs: int = 10_000
    max_events: int = 10_000
    max_calls_per_run: int = 10_000
    cron_poll: float = 1.0  # the cron scheduler looks at its clock at least this often

    def __post_init__(self) -> None:
        for name in ("signing_key", "signing_key_fallback"):
            key = getattr(self, name)
            if key is None:
                continue
            try:
                signing.bearer_token(key)
            except signing.SignatureError:
                raise ConfigError(
                    f"The executor's {name} is not a signing key (signkey-<env>-<hex>)."
                ) from None
        if (
            self.request_timeout <= 0
            or self.unreachable_budget < 0
            or self.max_sleep < 0
            or self.cron_poll <= 0
        ):
            raise ConfigError("The executor's timeouts and budgets must be positive seconds.")
        if self.jitter < 0 or min(self.max_runs, self.max_events, self.max_calls_per_run) < 1:
            raise ConfigError("The executor's jitter and limits must be positive.")
        if not callable(self.backoff) and not list(self.backoff):
            raise ConfigError("The executor's backoff schedule is empty.")
        if not list(self.unreachable_backoff):
            raise ConfigError("The executor's unreachable_backoff schedule is empty.")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def server_kind(self) -> ServerKind:
        """What we tell the SDK we are: it rejects a sync from the wrong kind."""
        return ServerKind.CLOUD if self.signing_key else ServerKind.DEV

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        if callable(self.backoff):
            base = float(self.backoff(attempt))
        else:
            schedule = list(self.backoff)
            base = float(schedule[min(attempt, len(schedule) - 1)])
        return base * (1.0 + random.uniform(0.0, self.jitter)) if self.jitter > 0 else base

    def unreachable_delay(self, n: int) -> float:
        schedule = list(self.unreachable_backoff)
        return float(schedule[min(n, len(schedule) - 1)])
