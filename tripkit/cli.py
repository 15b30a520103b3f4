"""The ``tripkit`` command: a thin layer over the Python API, one flag per parameter.

Any :class:`tripkit.errors.TripkitError` ends the command with its message on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence

from tripkit import __version__
from tripkit.config import load_settings
from tripkit.errors import TripkitError
from tripkit.store import SessionStore


def _config(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_dir)
    described = settings.describe()
    try:
        described["redis transport"] = settings.redis_transport_name
    except TripkitError as exc:
        described["redis transport"] = f"none ({exc.message})"
    width = max(map(len, described))
    for name, value in described.items():
        print(f"{name:<{width}}  {value}")
    return 0


async def _session(args: argparse.Namespace) -> int:
    settings = load_settings(args.env_dir)
    async with SessionStore.from_settings(settings) as store:
        session = await store.get(args.session_id)
    print(json.dumps(session.model_dump(mode="json", by_alias=True), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tripkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tripkit {__version__}")
    parser.add_argument(
        "--env-dir",
        default=None,
        help="where .env.local and .env are read from (default: the current directory)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="show the settings in effect (secrets as set/unset)")
    p.set_defaults(func=_config)

    p = sub.add_parser("session", help="print one session as the API would serve it")
    p.add_argument("session_id")
    p.set_defaults(func=_session)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], object] = args.func
    try:
        result = func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except TripkitError as exc:
        print(f"tripkit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
