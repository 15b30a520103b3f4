"""The ``tripkit`` command: a thin layer over the Python API, one flag per parameter.

Any :class:`tripkit.errors.TripkitError` ends the command with its message on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence

from tripkit import __version__
from tripkit.config import load_settings
from tripkit.errors import TripkitError
from tripkit.paths import history_csv, project_root, reports_dir
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


async def _cancel(args: argparse.Namespace) -> int:
    from tripkit.api_client import ApiClient

    api_url = args.api_url or os.environ.get("TRIPKIT_API_URL")
    if not api_url:
        raise TripkitError(
            "No API to send the cancel to.",
            remedy="Pass --api-url http://127.0.0.1:8000 (or set TRIPKIT_API_URL).",
        )
    async with ApiClient(api_url, timeout=args.timeout) as api:
        session = await api.cancel(args.session_id)
    print(json.dumps(session.model_dump(mode="json", by_alias=True), indent=2))
    return 0


def _dev(args: argparse.Namespace) -> int:
    # The local stack is imported here only: production code never loads it.
    import signal
    import threading

    from tripkit.devstack.stack import LocalStack, StackConfig

    stop = threading.Event()
    # Handled explicitly (not as KeyboardInterrupt), so Ctrl-C also stops a `tripkit dev`
    # whose shell started it with SIGINT ignored, as non-interactive shells do with `&`.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    config = StackConfig(
        api_port=args.port,
        chunk_delay=args.chunk_delay,
        shape=args.shape,
        redis_transport=args.redis_transport,
    )
    if args.workers is not None:
        config.workers = args.workers
    with LocalStack(config) as stack:
        print("tripkit dev ready", flush=True)
        for name, value in stack.env.items():
            print(f"{name}={value}", flush=True)
        print(f"# redis server: {stack.redis_version}", flush=True)
        print(f"# logs: {stack.log_dir}; Ctrl-C stops everything", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tripkit.devstack.demo import run_demo

    return run_demo(poll_interval=args.poll_interval, chunk_delay=args.chunk_delay, push=args.push)


async def _check(args: argparse.Namespace) -> int:
    from tripkit.checks import CheckStatus, check_environment, counts, diagnose, format_text

    try:
        results = await check_environment(
            args.env_dir or project_root(),
            api_url=args.api_url,
            worker_url=args.worker_url,
            only=args.only,
            timeout=args.timeout,
            local_stack=args.local,
        )
    except ValueError as exc:  # an unknown --only
        print(f"tripkit: {exc}", file=sys.stderr)
        return 2
    diagnoses = diagnose(results)
    if args.json:
        report = {
            "results": [r.as_dict() for r in results],
            "diagnoses": [d.as_dict() for d in diagnoses],
            "counts": counts(results),
        }
        print(json.dumps(report, indent=2))
    else:
        print(format_text(results, diagnoses))
    return 1 if any(r.status is CheckStatus.FAIL for r in results) else 0


def _report(args: argparse.Namespace) -> int:
    from tripkit.usage.runner import parse_value, run_report

    parameters = {name: parse_value(value) for name, value in args.parameters}
    if args.env_dir is not None:
        parameters.setdefault("env_dir", args.env_dir)
    paths = run_report(
        args.output_dir or reports_dir(),
        parameters=parameters,
        kernel_name=args.kernel,
        timeout=args.timeout,
        notebook=args.notebook,
        overwrite=args.overwrite,
    )
    print(paths.notebook)
    print(paths.html)
    return 0


async def _harvest(args: argparse.Namespace) -> int:
    from tripkit.usage.history import harvest_from_redis

    csv = args.csv or history_csv()
    history, done = await harvest_from_redis(csv, env_dir=args.env_dir)
    print(
        f"harvested {done.found} run records ({done.new} new) for {done.total_commands} "
        f"Redis commands; {len(history)} generations in {csv}"
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tripkit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tripkit {__version__}")
    parser.add_argument(
        "--env-dir",
        default=None,
        help="where .env.local and .env are read from (default: the project root, the "
        "nearest folder upwards holding pyproject.toml, .env.local or .env; or $TRIPKIT_ROOT)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="show the settings in effect (secrets as set/unset)")
    p.set_defaults(func=_config)

    p = sub.add_parser("dev", help="run the offline stack until Ctrl-C")
    p.add_argument("--port", type=int, default=8000, help="the API's port (0: a free one)")
    p.add_argument("--chunk-delay", type=float, default=0.02, help="model streaming pace (s)")
    p.add_argument(
        "--shape",
        choices=["split", "single"],
        default="split",
        help="split: an API process and worker processes (production, the default); "
        "single: one process serving everything",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes when split (default: one per core, at most 4)",
    )
    p.add_argument(
        "--redis-transport",
        choices=["rest", "resp"],
        default="rest",
        help="how the app reaches Redis: through the Upstash-REST gateway (default) or RESP",
    )
    p.set_defaults(func=_dev)

    p = sub.add_parser("demo", help="generate bundles end to end on the offline stack")
    p.add_argument("--poll-interval", type=float, default=2.0, help="seconds between polls")
    p.add_argument("--chunk-delay", type=float, default=0.02, help="model streaming pace (s)")
    p.add_argument(
        "--push",
        action="store_true",
        help="follow the generation by push (server-sent events) instead of polling",
    )
    p.set_defaults(func=_demo)

    p = sub.add_parser("session", help="print one session as the API would serve it")
    p.add_argument("session_id")
    p.set_defaults(func=_session)

    p = sub.add_parser(
        "cancel",
        help="stop a generation (POST /api/session/{id}/cancel); print the cancelled session",
    )
    p.add_argument("session_id")
    p.add_argument("--api-url", default=None, help="the app's URL (default: TRIPKIT_API_URL)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    p.set_defaults(func=_cancel)

    p = sub.add_parser("check", help="verify every step of the setup guide; exit 1 on a failure")
    p.add_argument("--json", action="store_true", help="print results and diagnoses as JSON")
    p.add_argument("--api-url", default=None, help="the app's URL (default: TRIPKIT_API_URL)")
    p.add_argument(
        "--worker-url",
        default=None,
        help="where /api/inngest is served, if apart from the API (default: TRIPKIT_WORKER_URL)",
    )
    p.add_argument("--only", action="append", metavar="ID", help="a check id or prefix (repeat)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per check (default 5)")
    p.add_argument(
        "--local",
        action="store_true",
        help="check the offline stack (`tripkit dev`): endpoints on this machine are expected "
        "(without it they fail: the real services are checked)",
    )
    p.set_defaults(func=_check)

    p = sub.add_parser("harvest", help="copy the run records in Redis into the history CSV")
    p.add_argument(
        "csv",
        nargs="?",
        default=None,
        help="the history CSV (default: reports/data/runs.csv under the project root)",
    )
    p.set_defaults(func=_harvest)

    p = sub.add_parser("report", help="run the usage report: dated notebook + code-free HTML")
    p.add_argument(
        "--output-dir",
        default=None,
        help="where they go (default: reports/ under the project root)",
    )
    p.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter, as papermill's -p (repeat)",
    )
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    p.add_argument("--kernel", default=None, help="the Jupyter kernel (default: the notebook's)")
    p.add_argument("--notebook", default=None, help="the report notebook (default: notebooks/)")
    p.add_argument("--overwrite", action="store_true", help="replace today's report, no -2 suffix")
    p.set_defaults(func=_report)
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
    except ModuleNotFoundError as exc:  # an optional extra is not installed
        print(
            f"tripkit: this command needs the module {exc.name!r}: "
            "pip install 'tripkit[notebooks]' (or 'tripkit[local]' for dev/demo).",
            file=sys.stderr,
        )
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
