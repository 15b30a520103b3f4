"""``python -m tripkit.devstack.executor``: the executor as a process, as LocalStack runs it.

Secrets are passed by the *name* of a variable (``--signing-key-env VAR``), never on the
command line, so they do not show in ``ps`` or in the stack's logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tripkit.devstack.executor.config import ExecutorConfig
from tripkit.devstack.executor.routes import run
from tripkit.errors import ConfigError


def _seconds_list(text: str, scale: float) -> tuple[float, ...]:
    try:
        values = tuple(float(v) * scale for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("expected at least one non-negative number")
    return values


def _secret(var: str | None, what: str) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var, "").strip()
    if not value:
        raise ConfigError(f"{var} is empty or not set; it should hold the {what}.")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tripkit.devstack.executor",
        description="A local Inngest-compatible executor (stands in for `inngest-cli dev`).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8288, help="0 picks a free port")
    parser.add_argument(
        "--signing-key-env",
        metavar="VAR",
        help="sign calls and check the app with the key in this variable (never printed)",
    )
    parser.add_argument("--signing-key-fallback-env", metavar="VAR")
    parser.add_argument("--event-key-env", metavar="VAR", help="accept only this event key")
    parser.add_argument(
        "--backoff-ms",
        type=lambda t: _seconds_list(t, 0.001),
        help="retry waits in ms after attempt 1, 2, ... (default 15s,30s,1m,2m,5m)",
    )
    parser.add_argument("--jitter", type=float, default=0.1, help="fraction added at random")
    parser.add_argument("--request-timeout", type=float, default=300.0, metavar="S")
    parser.add_argument(
        "--unreachable-budget",
        type=float,
        default=60.0,
        metavar="S",
        help="how long a run waits for an app that does not answer",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        config = ExecutorConfig(
            host=args.host,
            port=args.port,
            signing_key=_secret(args.signing_key_env, "Inngest signing key"),
            signing_key_fallback=_secret(args.signing_key_fallback_env, "fallback signing key"),
            event_key=_secret(args.event_key_env, "Inngest event key"),
            jitter=args.jitter,
            request_timeout=args.request_timeout,
            unreachable_budget=args.unreachable_budget,
            **({"backoff": args.backoff_ms} if args.backoff_ms else {}),
        )
        run(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
